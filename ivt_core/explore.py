"""What the Explore view shows, computed without a browser: a run's samples worst-first, and one step of one.

``sample_rows`` lists a run's trajectories (worst final IoU first) with filters, and ``count_rows`` counts them;
``step_view`` renders the box of a chosen step on the original image (older boxes and the ground truth optional,
for people only) and returns the step's raw text, reasoning and numbers; ``iou_curve`` gives a trajectory's IoU
per step.
"""

from __future__ import annotations

from PIL import Image
from sqlite_utils import Database

from ivt_core.boxes import Box
from ivt_core.data.sample import load_image
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.render import RenderStyle, render_box
from ivt_core.store.runs import get_run
from ivt_core.store.samples import get_sample
from ivt_core.store.traces import traces_of_sample
from ivt_core.store.views import count_trajectory_rows, trajectory_rows, trajectory_steps
from ivt_core.workspace import Workspace


def sample_rows(db: Database, run_id: int, outcome: str | None = None, parse_failures: bool = False,
                search: str | None = None, limit: int = 500, source: str | None = None,
                iou_band: tuple[float, float] | None = None) -> list[dict]:
    """Trajectories of a run, worst final IoU first, with their sample's expression and source.

    Filters: outcome class, samples with an unreadable answer, a text in the expression, the sample's source
    (datasets mixed from several), and a band of final-step IoU (inclusive). Raises InvalidInputError for a band
    outside 0..1 or reversed.
    """
    return trajectory_rows(db, run_id, outcome, parse_failures, search, limit, source, iou_band)


def count_rows(db: Database, run_id: int, outcome: str | None = None, parse_failures: bool = False,
               search: str | None = None, source: str | None = None,
               iou_band: tuple[float, float] | None = None) -> int:
    """How many trajectories ``sample_rows`` would list without its limit."""
    return count_trajectory_rows(db, run_id, outcome, parse_failures, search, source, iou_band)


def _steps(db: Database, run_id: int, sample_id: str) -> list[dict]:
    rows = trajectory_steps(db, run_id, sample_id)
    if not rows:
        raise NotFoundError(f"run {run_id} has no trajectory for sample {sample_id!r}")
    return rows


def _box(row: dict) -> Box | None:
    return Box(row["x1"], row["y1"], row["x2"], row["y2"]) if row["x1"] is not None else None


def iou_curve(db: Database, run_id: int, sample_id: str) -> list[float]:
    return [row["iou"] for row in _steps(db, run_id, sample_id)]


def step_view(workspace: Workspace, db: Database, run_id: int, sample_id: str, step: int, history: bool = False,
              ground_truth: bool = True, clamp: bool = False, model_view: bool = False) -> tuple[Image.Image, dict]:
    """The image with step ``step``'s box drawn, and that step's texts and numbers. ``model_view``: instead, the
    image exactly as the model was shown it before answering this step (the original at step 0, then the
    previous readable box drawn in the run's style; never the ground truth).

    Raises NotFoundError for an unknown run/sample and InvalidInputError for a step the trajectory lacks (with
    ``clamp``, a step past either end shows the nearest one instead; ``info["step"]`` says which).
    """
    rows = _steps(db, run_id, sample_id)
    if clamp:
        step = min(max(0, step), len(rows) - 1)
    if not 0 <= step < len(rows):
        raise InvalidInputError(f"sample {sample_id} has steps 0..{len(rows) - 1}, not {step}")
    sample = get_sample(db, sample_id)
    image = load_image(workspace.resolve(sample.image_path))
    row = rows[step]
    if model_view:
        earlier = next((b for b in (_box(r) for r in reversed(rows[:step])) if b is not None), None)
        run_style = RenderStyle.from_dict(get_run(db, run_id)["render_style"])
        shown = image if step == 0 or earlier is None else render_box(image, earlier, run_style)
    else:
        style = RenderStyle(history=history, ground_truth=ground_truth, label=f"step {step}")
        shown = render_box(image, _box(row), style, history=[_box(r) for r in rows[:step]],
                           ground_truth=sample.bbox)
    info = {
        "expression": sample.expression, "step": step, "steps": len(rows), "iou": row["iou"],
        "parse_ok": bool(row["parse_ok"]), "parse_failure": row["parse_failure"], "raw_text": row["raw_text"],
        "reasoning": row["reasoning"], "box": _box(row).to_xyxy() if row["x1"] is not None else None,
        "ground_truth": sample.bbox.to_xyxy(), "tokens_out": row["tokens_out"], "ious": [r["iou"] for r in rows],
        "tokens_in": row["tokens_in"], "latency_ms": row["latency_ms"], "own_text": row["own_text"],
        "traces": traces_of_sample(db, sample_id),
    }
    return shown, info
