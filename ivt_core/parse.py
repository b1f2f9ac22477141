"""Model text -> reasoning + box coordinates (in the model's own convention), or a parse failure.

``parse_answer`` never raises on model output: whatever the text, it returns a ``ParsedAnswer`` whose ``coords``
is four floats or None with ``failure`` saying why. Converting coordinates to pixels is ``boxes.from_model``'s job.

Accepted forms, the last box in the text winning (a refinement answer may quote the old box first):

- JSON with ``bbox_2d`` (``{"bbox_2d": [x1, y1, x2, y2], ...}``, a list of such objects, in a fenced block);
- an ``<answer>...</answer>`` span (looked at first when present; the text before it is the reasoning);
- Qwen2-VL's ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` and the bare ``(x1,y1),(x2,y2)`` form;
- a bare list of four numbers ``[x1, y1, x2, y2]``.

The ``self`` stopping policy needs the model's own verdict on the box it was shown; ``says_correct`` is True when
the reasoning says the box is already right (the refine prompts ask for that phrase).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUM = r"-?\d+(?:\.\d+)?"
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)
_BBOX_2D = re.compile(r"[\"']?bbox_2d[\"']?\s*[:=]\s*\[([^\[\]]*)\]")
_QWEN2_BOX = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_BARE_LIST = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = re.compile(_NUM)
_TRAILING_JUNK = re.compile(r"(?:\s|```(?:json)?|[\[{\"':,]|<answer>)+$")
_CORRECT = re.compile(
    r"\b(the box is (?:already )?correct|box is already right|already (?:correct|accurate)|no (?:change|correction) "
    r"(?:is )?needed|keep the (?:same )?box)\b|[\"']verdict[\"']\s*:\s*[\"']correct",
    re.I,
)


@dataclass(frozen=True)
class ParsedAnswer:
    """What was read from one model answer."""

    reasoning: str
    coords: tuple[float, float, float, float] | None
    failure: str | None = None
    says_correct: bool = False

    @property
    def ok(self) -> bool:
        return self.coords is not None


def _numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(text)]


def _last_box(text: str) -> tuple[tuple[float, ...] | None, str | None, int]:
    """Find the last box in ``text``: (coords, failure, start offset of the match or len(text))."""
    candidates: list[tuple[int, list[float]]] = []
    for match in _BBOX_2D.finditer(text):
        candidates.append((match.start(), _numbers(match.group(1))))
    for match in _QWEN2_BOX.finditer(text):
        candidates.append((match.start(), [float(g) for g in match.groups()]))
    if not candidates:
        for match in _BARE_LIST.finditer(text):
            nums = _numbers(match.group(1))
            if nums:
                candidates.append((match.start(), nums))
    if not candidates:
        return None, "no box found in the answer", len(text)
    start, nums = max(candidates, key=lambda c: c[0])
    if len(nums) != 4:
        return None, f"the last box has {len(nums)} numbers, not 4", start
    if not all(math.isfinite(n) for n in nums):
        return None, "the box has a non-finite number", start
    return tuple(nums), None, start


def parse_answer(text: object) -> ParsedAnswer:
    """Read reasoning and the last box from a model answer; never raises."""
    if not isinstance(text, str):
        return ParsedAnswer("", None, f"the answer is {type(text).__name__}, not text")
    stripped = text.strip()
    if not stripped:
        return ParsedAnswer("", None, "the answer is empty")
    think = " ".join(m.strip() for m in _THINK.findall(stripped))
    body = _THINK.sub("", stripped)
    answers = _ANSWER.findall(body)
    if answers:
        region = answers[-1]
        before = body[: body.rfind("<answer>")]
        coords, failure, _ = _last_box(region)
        if coords is None:
            coords, failure, start = _last_box(body)
            before = body[:start] if coords is not None else before
        reasoning = " ".join(p for p in (think, before.strip()) if p)
    else:
        coords, failure, start = _last_box(body)
        reasoning = " ".join(p for p in (think, body[:start].strip()) if p)
    reasoning = _TRAILING_JUNK.sub("", reasoning).strip()
    says_correct = bool(_CORRECT.search(stripped))
    return ParsedAnswer(reasoning, coords, failure, says_correct)  # type: ignore[arg-type]
