"""Runs compared sample by sample: which samples a run wins or loses against the first run, and one sample's
trajectories side by side at a shared step.

``compare_runs`` (in ``report``) gives the aggregate numbers; this module gives what the Compare view lists and
draws: ``per_sample`` (the common samples with each run's step-0 and final IoU and the differences against the
first run, biggest first) and ``side_by_side`` (each run's rendered box at one step, through ``explore``).
"""

from __future__ import annotations

from PIL import Image
from sqlite_utils import Database

from ivt_core.errors import InvalidInputError
from ivt_core.explore import step_view
from ivt_core.metrics import OUTCOME_BAND
from ivt_core.store.views import final_ious
from ivt_core.workspace import Workspace

SHOWS = ("all", "wins", "losses", "ties")


def per_sample(db: Database, run_ids: list[int], show: str = "all", limit: int = 500) -> list[dict]:
    """The runs' common samples, the largest final-IoU difference against the first run first.

    Each row: ``sample_id``, ``expression``, per run ``step0 <id>`` and ``final <id>``, and for every run after the
    first ``delta <id>`` (its final IoU minus the first run's). ``show``: ``wins`` keeps samples some later run
    improves by more than the outcome band, ``losses`` those some later run worsens by more, ``ties`` the rest.
    Raises InvalidInputError for fewer than two or more than three runs, or an unknown ``show``.
    """
    if not 2 <= len(run_ids) <= 3:
        raise InvalidInputError("compare takes two or three runs")
    if show not in SHOWS:
        raise InvalidInputError(f"show must be one of {', '.join(SHOWS)}, not {show!r}")
    found: dict[str, dict] = {}
    for r in final_ious(db, run_ids):
        row = found.setdefault(r["sample_id"], {"sample_id": r["sample_id"], "expression": r["expression"]})
        row[f"step0 {r['run_id']}"], row[f"final {r['run_id']}"] = r["step0_iou"], r["final_iou"]
    base, others = run_ids[0], run_ids[1:]
    rows = []
    for row in found.values():
        if not all(f"final {rid}" in row for rid in run_ids):
            continue  # not a common sample
        deltas = [row[f"final {rid}"] - row[f"final {base}"] for rid in others]
        for rid, delta in zip(others, deltas, strict=True):
            row[f"delta {rid}"] = delta
        win, loss = any(d > OUTCOME_BAND for d in deltas), any(d < -OUTCOME_BAND for d in deltas)
        if show == "all" or (show == "wins" and win) or (show == "losses" and loss) or (
                show == "ties" and not win and not loss):
            rows.append(row)
    rows.sort(key=lambda r: (-max(abs(r[f"delta {rid}"]) for rid in others), r["sample_id"]))
    return rows[:limit]


def side_by_side(workspace: Workspace, db: Database, run_ids: list[int], sample_id: str, step: int,
                 history: bool = False, ground_truth: bool = True) -> list[tuple[Image.Image, dict]]:
    """Each run's image and step information for ``sample_id`` at ``step``; a run whose trajectory is shorter
    (it stopped earlier, or ran fewer steps) shows its last step, and its info says so (``shown_step``)."""
    views = []
    for rid in run_ids:
        image, info = step_view(workspace, db, rid, sample_id, int(step), history, ground_truth, clamp=True)
        views.append((image, {**info, "run_id": rid, "asked_step": int(step), "shown_step": info["step"]}))
    return views
