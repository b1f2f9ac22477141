"""The trace review queue as the web app walks it: which trace comes next, what it looks like, its history.

The queue is a filter over the traces table walked by id (``after_id`` / ``before_id``), so moving to the next
trace is one indexed query whatever the number of traces, and a trace that leaves the filter after a review
(approved while the queue shows pending ones) simply is not found again: that is the auto-advance.
"""

from __future__ import annotations

import difflib
import math

from PIL import Image
from sqlite_utils import Database

from ivt_core.boxes import Box, iou
from ivt_core.data.sample import load_image
from ivt_core.errors import InvalidInputError
from ivt_core.render import RenderStyle, render_box
from ivt_core.store.samples import get_sample
from ivt_core.store.traces import list_traces, revisions
from ivt_core.workspace import Workspace

STUDENT_STYLE = RenderStyle(label="student", ground_truth=True)
TARGET_STYLE = RenderStyle(color=(30, 100, 255), label="target", fill_alpha=0.15)


def queue_filters(status: str | None = "pending", kind: str | None = None, search: str | None = None,
                  iou_min: float | None = None, iou_max: float | None = None) -> dict:
    """The store filters for the queue's form ("all" or empty means not filtered)."""
    filters = {"status": status, "kind": kind, "search": (search or "").strip() or None,
               "iou_min": iou_min if iou_min else None, "iou_max": iou_max if iou_max is not None and iou_max < 1
               else None}
    return {k: v for k, v in filters.items() if v not in (None, "", "all")}


def next_trace(db: Database, current_id: int | None, filters: dict, backwards: bool = False) -> dict | None:
    """The matching trace after (or before) ``current_id``; wraps around to the first (last) one; None if none."""
    if current_id is not None:
        key = "before_id" if backwards else "after_id"
        found = list_traces(db, limit=1, newest_first=backwards, **{**filters, key: current_id})
        if found:
            return found[0]
    found = list_traces(db, limit=1, newest_first=backwards, **filters)
    return found[0] if found else None


def check_box(values: list[float | None], width: int, height: int) -> Box:
    """A box typed into the four fields (pixel x1, y1, x2, y2). Raises InvalidInputError saying what to fix."""
    if len(values) != 4 or any(v is None for v in values):
        raise InvalidInputError("give all four numbers of the box: x1, y1, x2, y2 (pixels)")
    x1, y1, x2, y2 = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InvalidInputError("the box's numbers must be finite")
    if x2 <= x1:
        raise InvalidInputError(f"x2 ({x2:g}) must be greater than x1 ({x1:g})")
    if y2 <= y1:
        raise InvalidInputError(f"y2 ({y2:g}) must be greater than y1 ({y1:g})")
    box = Box(x1, y1, x2, y2)
    if not box.inside(width, height):
        raise InvalidInputError(f"the box must lie inside the {width}x{height} image (0 <= x <= {width}, "
                                f"0 <= y <= {height})")
    return box


def trace_view(workspace: Workspace, db: Database, trace: dict, step: int,
               box: Box | None = None) -> tuple[Image.Image, dict]:
    """The image with the student's box (red), step ``step``'s target box (blue; ``box`` overrides it, for a
    live preview of an edit) and the ground truth (green); plus the numbers shown beside it.

    Raises InvalidInputError for a step the trace lacks.
    """
    if not 1 <= step <= len(trace["steps"]):
        raise InvalidInputError(f"trace {trace['id']} has steps 1..{len(trace['steps'])}, not {step}")
    sample = get_sample(db, trace["sample_id"])
    image = load_image(workspace.resolve(sample.image_path))
    stored = Box(*trace["steps"][step - 1]["box"])
    target = box or stored
    shown = render_box(image, Box(*trace["student_box"]), STUDENT_STYLE, ground_truth=sample.bbox)
    shown = render_box(shown, target, RenderStyle(color=TARGET_STYLE.color, label=f"step {step}",
                                                  fill_alpha=TARGET_STYLE.fill_alpha))
    info = {"expression": sample.expression, "sample_id": sample.id, "size": (sample.width, sample.height),
            "student_iou": trace["student_iou"], "target": target.to_xyxy(), "target_iou": iou(target, sample.bbox),
            "edited": box is not None and box.to_xyxy() != stored.to_xyxy(), "ground_truth": sample.bbox.to_xyxy()}
    return shown, info


def history_rows(db: Database, trace_id: int) -> list[dict]:
    """The trace's revisions, oldest first, each with a readable diff (text changes as a unified diff)."""
    rows = []
    for rev in revisions(db, trace_id):
        diff = rev["diff"]
        if "reasoning" in diff:
            old, new = diff["reasoning"]
            lines = difflib.unified_diff(old.split(". "), new.split(". "), lineterm="", n=0)
            text = f"step {diff.get('step')}: " + " | ".join(line for line in lines if line[:1] in "+-"
                                                          and not line.startswith(("+++", "---")))
        elif "box" in diff:
            old, new = diff["box"]
            text = f"step {diff.get('step')}: box {_fmt(old)} -> {_fmt(new)}"
        elif "status" in diff:
            text = " -> ".join(diff["status"])
        else:
            text = ", ".join(f"{k}: {v}" for k, v in diff.items()) or "created"
        rows.append({"version": rev["version"], "when": rev["at"], "reviewer": rev["reviewer"],
                     "action": rev["action"], "change": text})
    return rows


def _fmt(box) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"
