"""The closed loop: samples -> trajectories.

Step 0: the image and the grounding prompt give box b0. Step t >= 1: the image with b(t-1) drawn on it (``render``)
and the refine prompt are appended to the same conversation, after the model's previous answer, and give
reasoning and box bt. Samples are processed in batches that advance step by step together; after each step the
stopping policy drops the samples it stops, and the rest go on until T refinement steps are done.

An answer without a readable box is a step with no box (IoU 0) and a parse-failure flag; the loop goes on,
showing the model the latest box it did give (or the plain image if it never gave one). Nothing a model says
makes the loop raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from PIL import Image

from ivt_core.boxes import Box, from_model, iou
from ivt_core.data.sample import Sample, load_image
from ivt_core.errors import InvalidInputError
from ivt_core.grounders.base import Generation, Grounder, Sampling
from ivt_core.parse import parse_answer
from ivt_core.prompts import LATEST, get_prompts
from ivt_core.records import StepRecord, Trajectory
from ivt_core.render import RenderStyle, render_box
from ivt_core.stopping import check_policy, should_stop


@dataclass(frozen=True)
class LoopConfig:
    """How a run iterates. ``steps`` is T, the number of refinement steps after step 0 (0 = single shot)."""

    steps: int = 2
    policy: str = "fixed"
    batch_size: int = 8
    prompt_version: str = LATEST
    render: RenderStyle = field(default_factory=RenderStyle)
    sampling: Sampling = field(default_factory=Sampling)

    def check(self) -> LoopConfig:
        """Return self if valid. Raises InvalidInputError saying which setting to fix."""
        if self.steps < 0:
            raise InvalidInputError(f"--steps must be 0 or more (refinement steps after step 0), got {self.steps}")
        if self.steps > 20:
            raise InvalidInputError(f"--steps {self.steps} is more than 20 refinement steps; use 20 or fewer")
        if self.batch_size < 1:
            raise InvalidInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.sampling.max_new_tokens < 1:
            raise InvalidInputError("max_new_tokens must be at least 1")
        check_policy(self.policy)
        return self


@dataclass
class _Live:
    """A sample in flight: its conversation so far and its steps."""

    sample: Sample
    image: Image.Image
    conversation: list[dict]
    trajectory: Trajectory


def _user(image: Image.Image, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}


def _record(live: _Live, index: int, answer: Generation, grounder: Grounder) -> StepRecord:
    parsed = parse_answer(answer.text)
    box: Box | None = None
    if parsed.coords is not None:
        size = live.image.size
        box = from_model(parsed.coords, grounder.family.convention, size, grounder.resized_size(*size))
    return StepRecord(
        index=index,
        raw_text=answer.text,
        reasoning=parsed.reasoning,
        box=box,
        iou=iou(box, live.sample.bbox),
        parse_ok=box is not None,
        parse_failure=parsed.failure,
        says_correct=parsed.says_correct,
        tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out,
        latency_ms=answer.latency_ms,
    )


def _latest_box(trajectory: Trajectory) -> Box | None:
    return next((s.box for s in reversed(trajectory.steps) if s.box is not None), None)


def run_batch(
    grounder: Grounder,
    samples: list[Sample],
    config: LoopConfig,
    images: list[Image.Image] | None = None,
    keep_conversations: bool = False,
) -> list[Trajectory]:
    """Run the loop on one batch of samples advancing together; returns one trajectory per sample, in order.

    With ``keep_conversations`` each trajectory carries its whole conversation (rendered images and the last
    answer included), which GRPO trains on.
    """
    prompts = get_prompts(grounder.family.prompt_family, config.prompt_version)
    images = images if images is not None else [load_image(s.image_path) for s in samples]
    live = [
        _Live(s, img, [_user(img, prompts.ground_text(s.expression))], Trajectory(s.id))
        for s, img in zip(samples, images, strict=True)
    ]
    active = list(live)
    for step in range(config.steps + 1):
        if not active:
            break
        answers = grounder.predict([item.conversation for item in active], config.sampling)
        still = []
        for item, answer in zip(active, answers, strict=True):
            item.trajectory.steps.append(_record(item, step, answer, grounder))
            item.trajectory.stop_step = step
            if step == config.steps or should_stop(item.trajectory.steps, config.policy):
                if keep_conversations:
                    item.conversation.append({"role": "assistant", "content": [{"type": "text", "text": answer.text}]})
                    item.trajectory.conversation = item.conversation
                continue
            rendered = render_box(item.image, _latest_box(item.trajectory), config.render)
            item.conversation.append({"role": "assistant", "content": [{"type": "text", "text": answer.text}]})
            item.conversation.append(_user(rendered, prompts.refine_text(item.sample.expression)))
            still.append(item)
        active = still
    return [item.trajectory for item in live]


def run_loop(
    grounder: Grounder,
    samples: Iterable[Sample],
    config: LoopConfig,
    resolve_image: Callable[[Sample], Image.Image] | None = None,
) -> Iterator[list[Trajectory]]:
    """Run the loop over ``samples`` in batches of ``config.batch_size``; yield each batch's trajectories.

    ``resolve_image`` loads a sample's image (default: ``load_image(sample.image_path)``).
    """
    config.check()
    loader = resolve_image or (lambda s: load_image(s.image_path))
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == config.batch_size:
            yield run_batch(grounder, batch, config, [loader(s) for s in batch])
            batch = []
    if batch:
        yield run_batch(grounder, batch, config, [loader(s) for s in batch])
