"""The closed loop: samples -> trajectories.

Step 0: the image and the grounding prompt give box b0. Step t >= 1: the image with b(t-1) drawn on it (``render``)
and the refine prompt are appended to the same conversation, after the model's previous answer, and give
reasoning and box bt. Samples are processed in batches that advance step by step together; after each step the
stopping policy drops the samples it stops, and the rest go on until T refinement steps are done.

Three ways to run the same loop: ``run_batch`` (fixed batches, each step re-encodes the whole conversation
through ``grounder.predict``: the plain loop), ``run_continuous`` (the cached engine of ``grounders.engine``:
only new tokens are encoded, and a sample that stops leaves the batch at once, the next sample taking its
place) and ``run_concurrent`` (a model behind a server: each sample's conversation goes on by itself, up to the
grounder's ``concurrency`` requests in flight). ``run_loop`` picks one (``LoopConfig.engine``: auto, cached or
plain); with greedy decoding all give the same answers.

With ``LoopConfig.verdict == "derived"`` a refinement answer that names what its box is on gets the verdict that
name implies (``ivt_core.derived_verdict``): where the model said something else, its answer is generated again
from the name and that verdict (a forced start), in the same batch step; the step records both answers.

An answer without a readable box is a step with no box (IoU 0) and a parse-failure flag; the loop goes on,
showing the model the latest box it did give (or the plain image if it never gave one). Nothing a model says
makes the loop raise.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace

from PIL import Image

from ivt_core import logs
from ivt_core.boxes import Box, from_model, iou
from ivt_core.config.evaluation import ENGINES
from ivt_core.config.settings import MAX_STEPS
from ivt_core.data.sample import Sample, load_image
from ivt_core.derived_verdict import VERDICTS, forced_start
from ivt_core.errors import InvalidInputError
from ivt_core.grounders.base import Generation, Grounder, Sampling, assistant_message
from ivt_core.parse import ParsedAnswer, parse_answer
from ivt_core.prompts import LATEST, get_prompts
from ivt_core.records import StepRecord, Trajectory
from ivt_core.render import RenderStyle, render_box
from ivt_core.stopping import check_policy, should_stop

PLAIN_AUTO_BATCH = 8
log = logs.get(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """How a run iterates. ``steps`` is T, the number of refinement steps after step 0 (0 = single shot)."""

    steps: int = 2
    policy: str = "fixed"
    batch_size: int = 8  # 0: as many as the device's memory holds (cached engine; 8 for the plain loop)
    prompt_version: str = LATEST
    render: RenderStyle = field(default_factory=RenderStyle)
    sampling: Sampling = field(default_factory=Sampling)
    engine: str = "auto"  # auto: the cached engine where the model supports it; cached; plain
    lanes: int = 1  # the cached engine's lanes (``_in_lanes``): 2 overlaps one lane's CPU work with the other's GPU
    verdict: str = "own"  # own: the model's verdicts; derived: from its name of the boxed object (``derived_verdict``)

    def check(self) -> LoopConfig:
        """Return self if valid. Raises InvalidInputError saying which setting to fix."""
        if self.steps < 0:
            raise InvalidInputError(f"--steps must be 0 or more (refinement steps after step 0), got {self.steps}")
        if self.steps > MAX_STEPS:
            raise InvalidInputError(f"--steps {self.steps} is more than {MAX_STEPS} refinement steps; use "
                                    f"{MAX_STEPS} or fewer")
        if self.batch_size < 0:
            raise InvalidInputError(f"--batch-size must be at least 1 (or auto), got {self.batch_size}")
        if self.sampling.max_new_tokens < 1:
            raise InvalidInputError("max_new_tokens must be at least 1")
        if self.lanes < 1:
            raise InvalidInputError(f"--lanes must be 1 or more, got {self.lanes}")
        if self.engine not in ENGINES:
            raise InvalidInputError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.verdict not in VERDICTS:
            raise InvalidInputError(f"--verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        check_policy(self.policy)
        return self


@dataclass
class _Live:
    """A sample in flight: its conversation so far and its steps."""

    sample: Sample
    image: Image.Image
    conversation: list[dict]
    trajectory: Trajectory
    step: int = 0


def _user(image: Image.Image, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}


def answer_box(parsed: ParsedAnswer, shown: Box | None, grounder: Grounder, size: tuple[int, int]) -> Box | None:
    """The box an answer gives, in pixels. A refinement answer that says the box it was shown is correct answers
    with that box, b(t-1), whatever coordinates it types after the verdict (kept in ``raw_text``), and may type
    none: the verdict is the answer, which the ``self`` rule stops on and every rule scores (the probe reads
    answers the same way)."""
    if parsed.says_correct and shown is not None:
        return shown
    if parsed.coords is None:
        return None
    return from_model(parsed.coords, grounder.family.convention, size, grounder.resized_size(*size))


def _record(live: _Live, index: int, answer: Generation, grounder: Grounder) -> StepRecord:
    """A step's record (its box as ``answer_box`` reads it)."""
    parsed = parse_answer(answer.text)
    shown = _latest_box(live.trajectory) if index > 0 else None
    box = answer_box(parsed, shown, grounder, live.image.size)
    failure = None if box is not None else parsed.failure
    return StepRecord(
        index=index,
        raw_text=answer.text,
        reasoning=parsed.reasoning,
        box=box,
        iou=iou(box, live.sample.bbox),
        parse_ok=box is not None,
        parse_failure=failure,
        says_correct=parsed.says_correct,
        tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out,
        latency_ms=answer.latency_ms,
        own_text=answer.own_text,
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
    _check_forced(grounder, config, keep_conversations)
    prompts = get_prompts(grounder.family.prompt_family, config.prompt_version)
    images = images if images is not None else [load_image(s.image_path) for s in samples]
    live = [_start(s, img, prompts) for s, img in zip(samples, images, strict=True)]
    active = list(live)
    while active:
        answers = grounder.predict([item.conversation for item in active], config.sampling)
        answers = _with_verdicts(active, answers, config,
                                 lambda rows, conversations: grounder.predict(conversations, config.sampling))
        going = _advance_all(active, answers, grounder, config, prompts, keep_conversations)
        active = [item for item, goes in zip(active, going, strict=True) if goes]
    return [item.trajectory for item in live]


def _check_forced(grounder: Grounder, config: LoopConfig, keep_conversations: bool) -> None:
    """Raise InvalidInputError where the derived verdict cannot run: a grounder that cannot go on from a forced
    start (a server), or GRPO's rollouts (it scores sampled tokens; a forced start is not sampled)."""
    if config.verdict != "derived":
        return
    if not getattr(grounder, "forced_starts", False):
        raise InvalidInputError("--verdict derived needs a local checkpoint (it makes an answer start with the "
                                "verdict its name implies, which a chat server does not take); drop --endpoint")
    if keep_conversations:
        raise InvalidInputError("GRPO trains on sampled answers; a derived verdict is not sampled: use --verdict own")


def _with_verdicts(items: list[_Live], answers: list[Generation], config: LoopConfig,
                   again: Callable[[list[int], list[list[dict]]], list[Generation]]) -> list[Generation]:
    """``answers`` with the derived verdict (``config.verdict``): each refinement answer whose start differs from
    the one its name implies (``forced_start``) is replaced by the model's answer from that start, asked of
    ``again(rows, conversations)`` (the same grounder or engine, for those rows only). The new answer keeps the
    model's own in ``own_text``; its token counts and latency are both answers' together."""
    if config.verdict != "derived":
        return answers
    starts = {row: start for row, (item, answer) in enumerate(zip(items, answers, strict=True))
              if item.step > 0 and (start := forced_start(item.sample.expression, answer.text))}
    if not starts:
        return answers
    forced = [items[row].conversation + [assistant_message(start)] for row, start in starts.items()]
    out = list(answers)
    for (row, start), new in zip(starts.items(), again(list(starts), forced), strict=True):
        own = answers[row]
        out[row] = replace(new, text=start + new.text, tokens_out=own.tokens_out + new.tokens_out,
                           latency_ms=own.latency_ms + new.latency_ms, token_ids=(), prompt_ids=(),
                           own_text=own.text)
    return out


def _start(sample: Sample, image: Image.Image, prompts) -> _Live:
    return _Live(sample, image, [_user(image, prompts.ground_text(sample.expression))], Trajectory(sample.id))


def _advance_all(items: list[_Live], answers: list[Generation], grounder: Grounder, config: LoopConfig, prompts,
                 keep_conversations: bool) -> list[bool]:
    """``_advance`` on a step's items; then the next turn of each that goes on, its box drawn (``_draw_all``)."""
    going = [_advance(item, answer, grounder, config, prompts, keep_conversations)
             for item, answer in zip(items, answers, strict=True)]
    on = [item for item, goes in zip(items, going, strict=True) if goes]
    drawn = _draw_all([item.image for item in on], [_latest_box(item.trajectory) for item in on], config.render)
    for item, image in zip(on, drawn, strict=True):
        item.conversation.append(_user(image, prompts.refine_text(item.sample.expression)))
    return going


DRAW_THREADS = 8  # at most; one per CPU core below that
PARALLEL_DRAW = 16  # fewer images than this are drawn in the caller's thread
# ``_draw_all``'s threads (an executor starts its threads on its first use, not here)
_DRAW_POOL = futures.ThreadPoolExecutor(max(1, min(DRAW_THREADS, os.cpu_count() or 1)), thread_name_prefix="ivt-draw")


def _draw_all(images: list[Image.Image], boxes: list[Box | None], style: RenderStyle) -> list[Image.Image]:
    """``render_box`` of each image with its box, in order, on a few threads when there are many. A drawn box is a
    copy of the image: ~1 ms of the CPU for 640x480, most of it the first touch of the copy's fresh memory, which
    Pillow does without the GIL. With one lane the GPU waits for the step's drawing; on threads the copies run side
    by side (505 rows on the H200 machine: 0.1-0.2 s less GPU idle time a step, docs/LOG.md session 28)."""
    if len(images) < PARALLEL_DRAW:
        return [render_box(image, box, style) for image, box in zip(images, boxes, strict=True)]
    return list(_DRAW_POOL.map(render_box, images, boxes, itertools.repeat(style, len(images))))


def _advance(item: _Live, answer: Generation, grounder: Grounder, config: LoopConfig, prompts,
             keep_conversations: bool) -> bool:
    """Record ``answer`` as the item's current step; True if it goes on (the caller appends its next user turn:
    ``_advance_all``)."""
    item.trajectory.steps.append(_record(item, item.step, answer, grounder))
    item.trajectory.stop_step = item.step
    reply = assistant_message(answer.text)
    if keep_conversations:  # what GRPO scores: the sampled tokens, not the text tokenized again
        reply.update(token_ids=list(answer.token_ids), truncated=answer.truncated)
        if answer.prompt_ids:  # what the model was fed before it (the cached engine's ids)
            reply["prompt_ids"] = answer.prompt_ids
    if item.step == config.steps or should_stop(item.trajectory.steps, config.policy):
        if keep_conversations:
            item.conversation.append(reply)
            item.trajectory.conversation = item.conversation
        return False
    item.conversation.append(reply)
    item.step += 1
    return True


def run_continuous(
    grounder: Grounder,
    samples: Iterable[Sample],
    config: LoopConfig,
    resolve_image: Callable[[Sample], Image.Image] | None = None,
    keep_conversations: bool = False,
) -> Iterator[list[Trajectory]]:
    """The loop on the cached engine with continuous batching: up to ``config.batch_size`` samples in flight;
    after every step, the trajectories that ended are yielded (in the order they ended) and new samples join."""
    loader = resolve_image or (lambda s: load_image(s.image_path))
    for ended in _continuous(grounder, ((s, loader(s)) for s in samples), config, keep_conversations):
        yield [trajectory for _, trajectory in ended]


def run_concurrent(
    grounder: Grounder,
    samples: Iterable[Sample],
    config: LoopConfig,
    resolve_image: Callable[[Sample], Image.Image] | None = None,
) -> Iterator[list[Trajectory]]:
    """The loop against a model behind a server: every sample's conversation runs on its own thread, up to
    ``grounder.concurrency`` at once, so no sample waits for a slower one (the server batches the requests that
    arrive together). Trajectories are yielded as they end, in groups of those that ended together."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    loader = resolve_image or (lambda s: load_image(s.image_path))
    queue = iter(samples)
    pool = ThreadPoolExecutor(grounder.concurrency, thread_name_prefix="ivt-loop")
    pending: set = set()

    def one(sample: Sample) -> Trajectory:
        return run_batch(grounder, [sample], config, [loader(sample)])[0]

    def refill() -> None:
        while len(pending) < grounder.concurrency:
            sample = next(queue, None)
            if sample is None:
                return
            pending.add(pool.submit(one, sample))

    try:
        refill()
        while pending:
            done, still = wait(pending, return_when=FIRST_COMPLETED)
            pending.clear()
            pending.update(still)
            ended = [future.result() for future in done]
            refill()
            yield ended
    finally:  # stopped early (an error, a cancelled job): the requests not yet sent are dropped
        pool.shutdown(wait=False, cancel_futures=True)


def run_samples(grounder: Grounder, samples: list[Sample], config: LoopConfig, images: list[Image.Image],
                keep_conversations: bool = False, engine=None) -> list[Trajectory]:
    """Every sample through the loop (the engine ``engine_for`` picks); trajectories in the input order, also
    when a sample appears more than once (GRPO's G rollouts of a prompt). ``engine``: a ``CachedEngine`` to use,
    or one per lane (their ``stats`` then tell what the run cost); new ones by default."""
    if engine_for(grounder, config) == "plain":
        config = replace(config, batch_size=config.batch_size or PLAIN_AUTO_BATCH)
        out: list[Trajectory] = []
        for start in range(0, len(samples), config.batch_size):
            out += run_batch(grounder, samples[start:start + config.batch_size], config,
                             images[start:start + config.batch_size], keep_conversations)
        return out
    engines = None if engine is None else list(engine) if isinstance(engine, list | tuple) else [engine]
    ended = [pair for group in _continuous(grounder, zip(samples, images, strict=True), config, keep_conversations,
                                           engines) for pair in group]
    return [trajectory for _, trajectory in sorted(ended, key=lambda pair: pair[0])]


def _continuous(grounder: Grounder, items: Iterable[tuple[Sample, Image.Image]], config: LoopConfig,
                keep_conversations: bool, engines: list | None = None) -> Iterator[list[tuple[int, Trajectory]]]:
    """Continuous batching on the cached engine, in one lane or several (``config.lanes``, or one per engine given).

    With lanes, the conversations in flight are split between engines that take turns on the GPU (one lane's
    compaction, prefill and decode at a time: ``engine._GPU_TURN``): while one lane runs there, the other prepares its
    next step on the CPU (reading answers, drawing boxes, the chat template, tokenizing, rotary positions; its
    pixels are patchified in its turn). Each lane is a thread with its own engine (``lane_engines``); the lanes
    take samples from one queue as their rows free up, so the one that ends early takes more. Answers do not
    depend on the lane (each conversation is its own row; greedy answers are the same as in one lane, tested in
    float32)."""
    from ivt_core.grounders.batch_size import auto_batch_size

    queue = enumerate(items)
    first = next(queue, None)
    if first is None:
        return
    queue = itertools.chain([first], queue)
    lanes = len(engines) if engines else config.lanes
    limit = config.batch_size  # conversations in flight in all lanes together
    if not limit:  # auto: sized from the first image and the device's free memory
        limit = auto_batch_size(grounder.model, grounder.processor, first[1][1].size, config.steps,
                                config.sampling.max_new_tokens, grounder.device, most=512 * lanes)
        log.info("--batch-size auto: %d conversations in flight", limit)
    engines = engines or lane_engines(grounder, lanes)

    def take():
        return next(queue, None)

    if lanes == 1:
        yield from _lane(grounder, take, config, keep_conversations, engines[0], limit)
        return
    yield from _in_lanes(grounder, take, config, keep_conversations, engines, limit)


def lane_engines(grounder: Grounder, lanes: int) -> list:
    """A cached engine per lane: with several, each on its own CUDA stream and with its own copy of the processor
    (a fast tokenizer is not safe to call from two threads at once)."""
    import copy

    from ivt_core.grounders.engine import CachedEngine

    return [CachedEngine(grounder.model, grounder.processor if lane == 0 else copy.deepcopy(grounder.processor),
                         grounder.device, own_stream=lanes > 1) for lane in range(lanes)]


def _lane(grounder: Grounder, take: Callable, config: LoopConfig, keep_conversations: bool, engine,
          limit: int, stopped: Callable[[], bool] = lambda: False) -> Iterator[list[tuple[int, Trajectory]]]:
    """One engine's continuous batching: up to ``limit`` conversations in flight, new ones taken (``take``) as
    rows free up; after every step, the trajectories that ended."""
    prompts = get_prompts(grounder.family.prompt_family, config.prompt_version)
    _check_forced(grounder, config, keep_conversations)
    active: list[tuple[int, _Live]] = []
    exhausted = False
    while not stopped():
        while not exhausted and len(active) < max(1, limit):
            item = take()
            if item is None:
                exhausted = True
            else:
                index, (sample, image) = item
                active.append((index, _start(sample, image, prompts)))
        if not active:
            return
        keys = [index for index, _ in active]
        answers = engine.step([(index, live.conversation) for index, live in active], config.sampling)
        answers = _with_verdicts([live for _, live in active], answers, config, functools.partial(
            _step_rows, engine, keys, config.sampling))
        still, ended = [], []
        going = _advance_all([live for _, live in active], answers, grounder, config, prompts, keep_conversations)
        for (index, live), goes in zip(active, going, strict=True):
            if goes:
                still.append((index, live))
            else:
                engine.release(index)
                ended.append((index, live.trajectory))
        active = still
        if ended:
            yield ended


def _step_rows(engine, keys: list, sampling: Sampling, rows: list[int], conversations: list[list[dict]]):
    """``engine.step`` on some rows of a step (``keys``: every row's key), with these conversations."""
    return engine.step([(keys[row], conversation) for row, conversation in zip(rows, conversations, strict=True)],
                       sampling)


def _in_lanes(grounder: Grounder, take: Callable, config: LoopConfig, keep_conversations: bool, engines: list,
              limit: int) -> Iterator[list[tuple[int, Trajectory]]]:
    """``_lane`` on every engine, each in its own thread; what ends is yielded here, in the caller's thread (which
    writes the store). An error in one lane stops the others and is raised here; so does closing this generator
    (a cancelled job): the lanes finish their current step and stop."""
    import queue as queues

    lock = threading.Lock()
    stop = threading.Event()
    out: queues.Queue = queues.Queue()
    done = object()
    shares = [limit // len(engines) + (lane < limit % len(engines)) for lane in range(len(engines))]

    def locked_take():
        with lock:
            return None if stop.is_set() else take()

    def work(engine, share: int) -> None:
        try:
            for ended in _lane(grounder, locked_take, config, keep_conversations, engine, share, stop.is_set):
                out.put(ended)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            out.put(exc)
        finally:
            out.put(done)

    running = [lane_thread(lane).submit(work, engine, share)
               for lane, (engine, share) in enumerate(zip(engines, shares, strict=True)) if share]
    try:
        left = len(running)
        while left:
            item = out.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        futures.wait(running)


_LANE_THREADS: list = []  # ``lane_thread``'s, one per lane number, for the process's lifetime
_LANE_THREADS_LOCK = threading.Lock()


def lane_thread(lane: int):
    """The thread lane number ``lane`` runs in, the same one in every run of the process (a one-worker executor).
    What the GPU libraries keep per thread then lasts from one run to the next: cuDNN's attention execution plans
    (thread-local in PyTorch; each new shape costs 42-74 ms on an H200 while the GPU drains: docs/LOG.md) and the
    cuBLAS handles. In fresh threads every evaluation, and every GRPO step's rollouts, built them all again."""
    with _LANE_THREADS_LOCK:
        while len(_LANE_THREADS) <= lane:
            _LANE_THREADS.append(futures.ThreadPoolExecutor(1, thread_name_prefix=f"ivt-lane-{len(_LANE_THREADS)}"))
        return _LANE_THREADS[lane]


def engine_for(grounder: Grounder, config: LoopConfig) -> str:
    """``cached`` or ``plain``: what ``run_loop`` will use. Raises if ``cached`` is asked of a model without it."""
    from ivt_core.grounders.engine import supports

    why_not = supports(grounder)
    if config.engine == "cached" and why_not:
        raise InvalidInputError(f"the cached engine cannot run this model ({why_not}); use --engine plain")
    chosen = "plain" if config.engine == "plain" or why_not else "cached"
    log.info("loop engine: %s%s", chosen, f" (the cached engine cannot run this model: {why_not})"
             if why_not and config.engine == "auto" else "")
    return chosen


def run_loop(
    grounder: Grounder,
    samples: Iterable[Sample],
    config: LoopConfig,
    resolve_image: Callable[[Sample], Image.Image] | None = None,
) -> Iterator[list[Trajectory]]:
    """Run the loop over ``samples``; yield trajectories in groups as they end (the cached engine, continuous
    batching) or batch by batch of ``config.batch_size`` (the plain loop). Which one: ``engine_for``.

    ``resolve_image`` loads a sample's image (default: ``load_image(sample.image_path)``).
    """
    config.check()
    _check_forced(grounder, config, False)  # before any image is read
    if getattr(grounder, "concurrency", 1) > 1:
        yield from run_concurrent(grounder, samples, config, resolve_image)
        return
    if engine_for(grounder, config) == "cached":
        yield from run_continuous(grounder, samples, config, resolve_image)
        return
    loader = resolve_image or (lambda s: load_image(s.image_path))
    config = replace(config, batch_size=config.batch_size or PLAIN_AUTO_BATCH)
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == config.batch_size:
            yield run_batch(grounder, batch, config, [loader(s) for s in batch])
            batch = []
    if batch:
        yield run_batch(grounder, batch, config, [loader(s) for s in batch])
