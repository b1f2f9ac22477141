"""Corrective traces: synthesis from a run's own errors, and the review actions.

Synthesis (``synthesize``) takes a recorded run, keeps samples whose step-0 IoU lies strictly inside a band
(paper: 0 < IoU < 0.85), interpolates target boxes from the student's box to the ground truth over T steps (a box
on another object, IoU < 0.1, jumps to the ground truth at once: no targets over empty background)
(the last target is the ground truth itself), has a teacher write each step, and stores the traces as pending.
Optionally it adds "keep" traces for already-good boxes (IoU >= the band's top) at a ratio of the corrective
ones, so the model also learns not to drift, and (``confirm``) a last step that looks at the corrected box and
says it is correct, so the model learns to stop (keep traces then keep the box for two steps). It is idempotent
per (run, sample, teacher): running it again adds only what is missing, which also makes it resumable.

With ``counterfactual`` a share of the run's samples also gets a trace whose first answer is not the model's:
the ground truth (a keep trace) or another object's box (a corrective one), half each, written as the model's
answer would be. Their teacher is named ``<teacher>-counterfactual`` and their origin ``counterfactual``, so they
are reviewed and exported as such, and SFT never trains that first answer (it is not the model's).

Review (``approve``, ``reject``, ``edit_reasoning``, ``edit_box``, ``bulk``) goes through
``store.traces.update_trace``: every change is a new version with a revision row, and an edit made against a
stale version is refused (``TraceConflict``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from ivt_core.boxes import Box, interpolate, iou, to_model
from ivt_core.config.settings import stored
from ivt_core.config.synthesis import SynthConfig
from ivt_core.data.sample import Sample, load_image
from ivt_core.errors import InvalidInputError
from ivt_core.limits import MAX_REASONING_CHARS, check_text
from ivt_core.render import RenderStyle, render_box
from ivt_core.store.models import get_model
from ivt_core.store.runs import get_run, load_trajectories
from ivt_core.store.samples import get_sample
from ivt_core.store.traces import get_trace, has_trace, insert_trace, traced_samples, update_trace
from ivt_core.teachers.base import TeachContext, Teacher
from ivt_core.teachers.geometric import keep_reasoning
from ivt_core.workspace import Workspace

WRONG_OBJECT_IOU = 0.1  # a student box overlapping the target less than this is on another object (or nothing)


def answer_text(reasoning: str, box: Box, convention: str, size: tuple[int, int], resized) -> str:
    """A step's assistant turn: the reasoning, then the box as JSON in the model's own convention."""
    coords = to_model(box, convention, size, tuple(resized) if resized else None)
    return f"{reasoning}\n{json.dumps({'bbox_2d': coords})}".strip()


COUNTERFACTUAL = "counterfactual"


@dataclass
class _Answer:
    """A first answer as synthesis reads it from a trajectory (here: a counterfactual one, not the model's)."""

    box: Box
    raw_text: str


@dataclass
class _Counterfactual:
    """A first answer that is not the model's, shaped as synthesis reads a trajectory (sample, steps[0], IoU)."""

    sample_id: str
    steps: list[_Answer]
    step0_iou: float


def counterfactual_answers(db, trajectories, config: SynthConfig, family,
                           processor) -> list[tuple[_Counterfactual, str]]:
    """(first answer, kind) for ``config.counterfactual`` x the run's samples, drawn by the seed: half the ground
    truth ("keep"), half another object's box ("corrective"), each written as the model's answer in its
    convention. Samples with fewer than two objects are skipped (nothing else to draw)."""
    from ivt_core.grounders.processing import resized_size

    if not config.counterfactual:
        return []
    rng = random.Random(f"{config.seed}:{COUNTERFACTUAL}")
    picked = rng.sample(trajectories, round(config.counterfactual * len(trajectories)))
    out = []
    for traj in picked:
        sample = get_sample(db, traj.sample_id)
        objects, target = sample.meta.get("objects", []), sample.meta.get("target")
        if len(objects) < 2 or target is None:
            continue
        keep = rng.random() < 0.5
        box = sample.bbox if keep else Box(*rng.choice([o for i, o in enumerate(objects) if i != target])["box"])
        resized = resized_size(processor, sample.width, sample.height) if processor else None
        text = json.dumps({"bbox_2d": to_model(box, family.convention, (sample.width, sample.height), resized)})
        out.append((_Counterfactual(sample.id, [_Answer(box, text)], iou(box, sample.bbox)),
                    "keep" if keep else "corrective"))
    return out


def _processor_if_resized(model: dict, family):
    """The model's processor when its boxes are in resized-image pixels (to record each sample's resized size)."""
    if family.convention != "abs_resized":
        return None
    from ivt_core.grounders.processing import load_processor

    return load_processor(model["base_path"], family.name)


def synthesize(
    workspace: Workspace,
    run_id: int,
    teacher: Teacher,
    config: SynthConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write pending traces for a run; returns counts (created, existing, corrective, keep, eligible)."""
    from ivt_core.families import FAMILIES, Family
    from ivt_core.grounders.processing import resized_size

    config = (config or SynthConfig()).check()
    db = workspace.connect()
    try:
        run = get_run(db, run_id)
        model = get_model(db, run["model_id"])
        family = FAMILIES.get(model["family"]) or Family(model["family"], (), run["config"].get("coords", "abs"),
                                                         "generic")
        processor = _processor_if_resized(model, family)
        trajectories = [t for t in load_trajectories(db, run_id) if t.steps and t.steps[0].box is not None]
        corrective = [t for t in trajectories if config.iou_low < t.step0_iou < config.iou_high
                      or (config.include_zero and t.step0_iou == 0.0)]
        keepable = [t for t in trajectories if t.step0_iou >= config.iou_high]
        ratio = config.keep_ratio if config.keep_ratio >= 0 else len(keepable) / max(1, len(corrective))
        n_keep = min(len(keepable), round(ratio * len(corrective)))
        keep = random.Random(f"{config.seed}:keep").sample(keepable, n_keep) if n_keep else []
        existing = traced_samples(db, run_id, teacher.name)
        todo = [(t, "corrective") for t in corrective if t.sample_id not in existing]
        todo += [(t, "keep") for t in keep if t.sample_id not in existing]
        counterfactual_teacher = f"{teacher.name}-{COUNTERFACTUAL}"
        existing_cf = traced_samples(db, run_id, counterfactual_teacher)
        todo += [(t, kind) for t, kind in counterfactual_answers(db, trajectories, config, family, processor)
                 if t.sample_id not in existing_cf]
        created = 0
        total = len(todo)
        for start in range(0, total, config.batch_size):
            chunk = todo[start:start + config.batch_size]
            samples = {t.sample_id: get_sample(db, t.sample_id) for t, _ in chunk}
            images = {sid: load_image(workspace.resolve(s.image_path)) for sid, s in samples.items()}
            contexts, owners = [], []
            for position, (traj, kind) in enumerate(chunk):  # (a sample may have its own and a counterfactual trace)
                if kind == "keep":
                    continue
                sample, student = samples[traj.sample_id], traj.steps[0].box
                if iou(student, sample.bbox) < WRONG_OBJECT_IOU:  # another object: jump, never cross background
                    targets = [sample.bbox] * config.steps
                else:
                    targets = [interpolate(student, sample.bbox, k / config.steps) for k in range(1, config.steps + 1)]
                    targets[-1] = sample.bbox
                shown = [student, *targets[:-1]]
                for k in range(config.steps):
                    contexts.append(TeachContext(
                        sample.id, sample.expression, images[sample.id], shown[k], targets[k], k + 1, config.steps,
                        sample.meta.get("objects", []), sample.meta.get("target"), config.seed))
                    owners.append((position, targets[k]))
            outputs = teacher.write(contexts) if contexts else []
            written: dict[str, list] = {}
            for (position, target), out in zip(owners, outputs, strict=True):
                written.setdefault(position, []).append((target, out))
            for position, (traj, kind) in enumerate(chunk):
                sample = samples[traj.sample_id]
                resized = (list(resized_size(processor, sample.width, sample.height)) if processor else None)
                keep_text = (teacher.keep_text(sample.expression, sample.id) if hasattr(teacher, "keep_text")
                             else keep_reasoning(sample.expression, config.seed, sample.id))
                counterfactual = isinstance(traj, _Counterfactual)
                if kind == "keep":
                    kept = {"reasoning": keep_text, "box": traj.steps[0].box.to_xyxy(), "iou": traj.step0_iou}
                    steps = [kept, dict(kept)] if config.confirm else [kept]
                    flags = []
                else:
                    steps = [{"reasoning": out.reasoning, "box": target.to_xyxy(), "iou": iou(target, sample.bbox)}
                             for target, out in written[position]]
                    if config.confirm:
                        steps.append({"reasoning": keep_text, "box": sample.bbox.to_xyxy(), "iou": 1.0})
                    flags = sorted({f for _, out in written[position] for f in out.flags})
                fields = {
                    "run_id": run_id, "sample_id": sample.id, "kind": kind,
                    "teacher": counterfactual_teacher if counterfactual else teacher.name,
                    "origin": COUNTERFACTUAL if counterfactual else "synth", "status": "pending", "family": family.name,
                    "student_text": traj.steps[0].raw_text, "student_box": traj.steps[0].box.to_xyxy(),
                    "student_iou": traj.step0_iou, "steps": steps, "flags": flags, "final_iou": steps[-1]["iou"],
                    "meta": {"convention": family.convention, "resized": resized, "synth": stored(config),
                             "render": run["render_style"]},
                }
                if insert_trace(db, fields, f"teacher:{teacher.name}", sample.expression) is not None:
                    created += 1
            if progress:
                progress(min(start + len(chunk), total), total)
        return {"created": created, "existing": len(existing), "corrective": len(corrective), "keep": len(keep),
                "eligible_keep": len(keepable), "considered": len(trajectories),
                "counterfactual": sum(isinstance(t, _Counterfactual) for t, _ in todo)}
    finally:
        db.close()


def traces_from_rollouts(workspace: Workspace, trajectories, teacher: Teacher, family, steps: int) -> int:
    """The IVR-R1 flywheel: low-reward rollouts become pending corrective traces (origin ``grpo``)."""
    db = workspace.connect()
    created = 0
    try:
        for traj in trajectories:
            sample = get_sample(db, traj.sample_id)
            image = load_image(workspace.resolve(sample.image_path))
            student = traj.steps[0].box
            targets = [interpolate(student, sample.bbox, k / steps) for k in range(1, steps + 1)]
            targets[-1] = sample.bbox
            shown = [student, *targets[:-1]]
            outputs = teacher.write([TeachContext(sample.id, sample.expression, image, shown[k], targets[k], k + 1,
                                                  steps, sample.meta.get("objects", []), sample.meta.get("target"))
                                     for k in range(steps)])
            fields = {
                "run_id": None, "sample_id": sample.id, "teacher": teacher.name, "kind": "corrective",
                "origin": "grpo", "status": "pending", "family": family.name, "student_text": traj.steps[0].raw_text,
                "student_box": student.to_xyxy(), "student_iou": traj.step0_iou,
                "steps": [{"reasoning": o.reasoning, "box": t.to_xyxy(), "iou": iou(t, sample.bbox)}
                          for t, o in zip(targets, outputs, strict=True)],
                "flags": [], "final_iou": 1.0, "meta": {"convention": family.convention, "resized": None},
            }
            duplicate = has_trace(db, sample.id, origin="grpo", student_box=student.to_xyxy())
            if not duplicate and insert_trace(db, fields, f"teacher:{teacher.name}", sample.expression):
                created += 1
        return created
    finally:
        db.close()


def _sample_for(db: Database, trace: dict) -> Sample:
    return get_sample(db, trace["sample_id"])


def approve(db: Database, trace_id: int, version: int, reviewer: str) -> int:
    return _set_status(db, trace_id, version, reviewer, "approved")


def reject(db: Database, trace_id: int, version: int, reviewer: str) -> int:
    return _set_status(db, trace_id, version, reviewer, "rejected")


def _set_status(db: Database, trace_id: int, version: int, reviewer: str, status: str) -> int:
    trace = get_trace(db, trace_id)
    return update_trace(db, trace_id, version, reviewer, status[:-1] if status.endswith("d") else status,
                        {"status": status}, {"status": [trace["status"], status]},
                        _sample_for(db, trace).expression)


def _step(trace: dict, step: int) -> dict:
    if not 1 <= step <= len(trace["steps"]):
        raise InvalidInputError(f"trace {trace['id']} has steps 1..{len(trace['steps'])}, not {step}")
    return trace["steps"][step - 1]


def edit_reasoning(db: Database, trace_id: int, version: int, step: int, text: str, reviewer: str) -> int:
    """Replace one step's reasoning. Raises InvalidInputError for empty text or a wrong step number."""
    if not text or not text.strip():
        raise InvalidInputError("the reasoning cannot be empty")
    check_text(text, "reasoning", MAX_REASONING_CHARS)
    trace = get_trace(db, trace_id)
    steps = [dict(s) for s in trace["steps"]]
    old = _step(trace, step)["reasoning"]
    steps[step - 1]["reasoning"] = text.strip()
    return update_trace(db, trace_id, version, reviewer, "edit_text", {"steps": steps},
                        {"step": step, "reasoning": [old, text.strip()]}, _sample_for(db, trace).expression)


def edit_box(db: Database, trace_id: int, version: int, step: int, box: list[float], reviewer: str) -> int:
    """Replace one step's target box (pixel xyxy); its IoU is recomputed. Raises InvalidInputError if invalid."""
    trace = get_trace(db, trace_id)
    sample = _sample_for(db, trace)
    new = Box.from_xyxy(box)
    if new.is_empty() or not new.inside(sample.width, sample.height):
        raise InvalidInputError(f"box {box} is empty or outside the {sample.width}x{sample.height} image")
    steps = [dict(s) for s in trace["steps"]]
    old = _step(trace, step)["box"]
    steps[step - 1].update(box=new.to_xyxy(), iou=iou(new, sample.bbox))
    return update_trace(db, trace_id, version, reviewer, "edit_box",
                        {"steps": steps, "final_iou": steps[-1]["iou"]},
                        {"step": step, "box": [old, new.to_xyxy()]}, sample.expression)


def bulk(db: Database, trace_ids: list[int], action: str, reviewer: str) -> dict:
    """Approve or reject many traces at their current versions; returns {'done': n, 'conflicts': [ids]}."""
    if action not in ("approve", "reject"):
        raise InvalidInputError(f"bulk action must be approve or reject, not {action!r}")
    from ivt_core.store.traces import TraceConflict

    done, conflicts = 0, []
    for trace_id in trace_ids:
        trace = get_trace(db, trace_id)
        try:
            (approve if action == "approve" else reject)(db, trace_id, trace["version"], reviewer)
            done += 1
        except TraceConflict:
            conflicts.append(trace_id)
    return {"done": done, "conflicts": conflicts}


def restore_statuses(db: Database, changed: dict, reviewer: str) -> tuple[int, int]:
    """Undo a bulk action: each trace of ``changed`` ({id: {"status", "version"}}) goes back to its earlier status
    if nobody changed it since (a new revision, "undo"); returns (restored, left alone)."""
    from ivt_core.store.traces import TraceConflict

    restored = skipped = 0
    for trace_id, was in changed.items():
        trace = get_trace(db, int(trace_id))
        try:
            update_trace(db, int(trace_id), was["version"], reviewer, "undo", {"status": was["status"]},
                         {"status": [trace["status"], was["status"]]}, _sample_for(db, trace).expression)
            restored += 1
        except TraceConflict:
            skipped += 1
    return restored, skipped


def trace_images(workspace: Workspace, trace: dict, sample: Sample, style: RenderStyle | None = None) -> list[str]:
    """Stored paths of the images of a trace's conversation: the original, then each box the student is shown.

    Rendered from the current boxes (so a box edit gives new images) in the style of the run the trace came from
    (stored with it; the paper's for traces made before styles were stored); content-addressed, so unchanged
    renders are not written twice.
    """
    style = style or RenderStyle.from_dict(trace.get("meta", {}).get("render") or {})
    image = load_image(workspace.resolve(sample.image_path))
    shown = [trace["student_box"], *[s["box"] for s in trace["steps"][:-1]]]
    paths = [str(workspace.resolve(sample.image_path))]
    for box in shown:
        paths.append(str(workspace.resolve(workspace.store_image(render_box(image, Box(*box), style)))))
    return paths
