"""The mirage probe: does the model correct boxes by their accuracy, or react to a box being there at all?

For one sample, draw counterfactual boxes on the image as if the model had answered them (the ground truth,
the model's own step-0 box, another object of the asked shape when the scene's objects are known (the
look-alike a grounder most often takes instead: the shapes toy's typical error), the ground truth shifted by
20 % and by 60 % of its size, a random box, and no box), ask the model to refine each, and measure where its
next box lands. One more second turn, ``re-ask``, asks the *same grounding question again* on the same image
with no box: a model that can hold a conversation answers it as well as the first time, so unreadable or wrong
re-asks show a context failure, not a refinement one. For each counterfactual:

- ``shown_iou``: IoU of the drawn box with the ground truth (how good the box it was shown is);
- ``next_iou``: IoU of the model's refined box with the ground truth;
- ``moved``: 1 - IoU(drawn box, refined box): how much the model changed the box;
- ``gain``: next_iou - shown_iou.

A model that judges accuracy moves bad boxes more than good ones: ``moved`` falls as ``shown_iou`` rises
(a clearly negative correlation over many samples). A model that moves boxes by about the same amount
whatever their quality is reacting to box presence, which the paper's v2 reports for the IVT loop.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import fmean

from PIL import Image

from ivt_core.boxes import Box, iou, to_model
from ivt_core.data.sample import Sample
from ivt_core.grounders.base import Grounder, Sampling
from ivt_core.loop import answer_box
from ivt_core.parse import parse_answer
from ivt_core.prompts import LATEST, get_prompts
from ivt_core.render import RenderStyle, render_box

DEFAULT_STYLE = RenderStyle()
PROBE_SAMPLING = Sampling(max_new_tokens=128)
COUNTERFACTUALS = ("ground truth", "own step 0", "look-alike", "shifted 20%", "shifted 60%", "random", "none",
                   "re-ask")
REASK = "re-ask"


@dataclass
class ProbeRow:
    sample_id: str
    shown: str
    shown_box: list[float] | None
    shown_iou: float | None
    next_box: list[float] | None
    next_iou: float
    moved: float | None
    gain: float | None
    parse_ok: bool
    raw_text: str
    first_iou: float = 0.0  # IoU of the model's own first (step-0) answer
    says_correct: bool = False  # the answer's verdict: the drawn box is correct (it then answers with that box)


def _shift(box: Box, fraction: float, width: int, height: int) -> Box:
    dx, dy = box.width * fraction, box.height * fraction
    # shift towards the side with more room so the box stays mostly inside the image
    sx = dx if box.x2 + dx <= width else -dx
    sy = dy if box.y2 + dy <= height else -dy
    return Box(box.x1 + sx, box.y1 + sy, box.x2 + sx, box.y2 + sy).clip(width, height)


def _random_box(rng: random.Random, gt: Box, width: int, height: int) -> Box:
    w = min(width, max(4.0, gt.width * rng.uniform(0.7, 1.3)))
    h = min(height, max(4.0, gt.height * rng.uniform(0.7, 1.3)))
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return Box(x, y, x + w, y + h)


def _look_alike(sample: Sample, rng: random.Random) -> Box | None:
    """The box of another object of the asked one's shape in ``sample``'s scene (``meta``), or None."""
    objects, target = sample.meta.get("objects"), sample.meta.get("target")
    if not objects or target is None:
        return None
    alike = [o for i, o in enumerate(objects) if i != target and o.get("kind") == objects[target].get("kind")]
    return Box(*rng.choice(alike)["box"]) if alike else None


def _answer_text(box: Box, grounder: Grounder, size: tuple[int, int]) -> str:
    coords = to_model(box, grounder.family.convention, size, grounder.resized_size(*size))
    return json.dumps({"bbox_2d": coords})


def probe_samples(
    grounder: Grounder,
    samples: Sequence[Sample],
    images: Sequence[Image.Image],
    seed: int = 0,
    style: RenderStyle = DEFAULT_STYLE,
    sampling: Sampling = PROBE_SAMPLING,
    prompt_version: str = LATEST,
    counterfactuals: Sequence[str] = COUNTERFACTUALS,
) -> list[ProbeRow]:
    """Probe each sample with each of ``counterfactuals`` (two model calls per sample batch); one row per pair."""
    prompts = get_prompts(grounder.family.prompt_family, prompt_version)

    def first_turn(sample, image):
        return {"role": "user", "content": [{"type": "image", "image": image},
                                            {"type": "text", "text": prompts.ground_text(sample.expression)}]}

    step0 = grounder.predict([[first_turn(s, im)] for s, im in zip(samples, images, strict=True)], sampling)
    conversations, meta = [], []
    for sample, image, answer in zip(samples, images, step0, strict=True):
        rng = random.Random(f"{seed}:{sample.id}")
        w, h = image.size
        own = answer_box(parse_answer(answer.text), None, grounder, image.size)
        shown = {
            "ground truth": sample.bbox,
            "own step 0": own,
            "look-alike": _look_alike(sample, rng),
            "shifted 20%": _shift(sample.bbox, 0.2, w, h),
            "shifted 60%": _shift(sample.bbox, 0.6, w, h),
            "random": _random_box(rng, sample.bbox, w, h),
            "none": None,
            REASK: None,
        }
        for name in counterfactuals:
            box = shown[name]
            if name in ("own step 0", "look-alike") and box is None:
                continue  # no readable step 0 (nothing to show as its own), or no object of the asked shape
            said = answer.text if box is None else _answer_text(box, grounder, image.size)
            again = prompts.ground_text(sample.expression) if name == REASK else prompts.refine_text(sample.expression)
            conversations.append([
                first_turn(sample, image),
                {"role": "assistant", "content": [{"type": "text", "text": said}]},
                {"role": "user", "content": [{"type": "image", "image": render_box(image, box, style)},
                                             {"type": "text", "text": again}]},
            ])
            meta.append((sample, image, name, box, iou(own, sample.bbox)))
    answers = grounder.predict(conversations, sampling)
    rows = []
    for (sample, image, name, box, first), answer in zip(meta, answers, strict=True):
        parsed = parse_answer(answer.text)
        nxt = answer_box(parsed, box, grounder, image.size)  # read as the loop reads a refinement
        shown_iou = iou(box, sample.bbox) if box is not None else None
        next_iou = iou(nxt, sample.bbox)
        moved = (1.0 - iou(box, nxt)) if box is not None and nxt is not None else None
        rows.append(ProbeRow(
            sample_id=sample.id, shown=name, shown_box=box.rounded(1).to_xyxy() if box else None,
            shown_iou=shown_iou, next_box=nxt.rounded(1).to_xyxy() if nxt else None, next_iou=next_iou,
            moved=moved, gain=(next_iou - shown_iou) if shown_iou is not None else None,
            parse_ok=nxt is not None, raw_text=answer.text, first_iou=first, says_correct=parsed.says_correct,
        ))
    return rows


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 pairs or no variance."""
    if len(xs) < 3:
        return None
    mx, my = fmean(xs), fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else None


def summarize_probe(rows: Sequence[ProbeRow]) -> dict:
    """Per-counterfactual means and the correlation of the drawn box's IoU with the model's correction."""
    per = {}
    for name in COUNTERFACTUALS:
        group = [r for r in rows if r.shown == name]
        if not group:
            continue
        moved = [r.moved for r in group if r.moved is not None]
        shown = [r.shown_iou for r in group if r.shown_iou is not None]
        per[name] = {
            "n": len(group),
            "mean_shown_iou": fmean(shown) if shown else None,
            "mean_next_iou": fmean(r.next_iou for r in group),
            "acc@0.5": sum(r.next_iou >= 0.5 for r in group) / len(group),
            "mean_moved": fmean(moved) if moved else None,
            "readable": sum(r.parse_ok for r in group) / len(group),
            "says_correct": sum(r.says_correct for r in group) / len(group),
        }
    pairs = [(r.shown_iou, r.moved, r.gain) for r in rows if r.shown_iou is not None and r.moved is not None]
    first = {r.sample_id: r.first_iou for r in rows}
    return {
        "samples": len(first),
        "step0_acc@0.5": sum(v >= 0.5 for v in first.values()) / len(first) if first else 0.0,
        "per_counterfactual": per,
        "corr_shown_iou_vs_moved": pearson([p[0] for p in pairs], [p[1] for p in pairs]),
        "corr_shown_iou_vs_gain": pearson([p[0] for p in pairs], [p[2] for p in pairs]),
        "pairs_used": len(pairs),
        "reading": ("A model that judges accuracy moves bad boxes more than good ones (clearly negative "
                    "corr_shown_iou_vs_moved). Near zero means it reacts to a box being there, not to how good "
                    "it is. None means too few readable refinements to tell."),
    }


def rows_as_dicts(rows: Sequence[ProbeRow]) -> list[dict]:
    return [asdict(r) for r in rows]
