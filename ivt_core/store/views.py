"""Read models of the Explore and Compare views: a run's trajectories filtered and ordered, their steps, and the
final IoUs of several runs side by side. The views (``ivt_core.explore``, ``ivt_core.comparison``) shape these
rows for people; the SQL is here."""

from __future__ import annotations

from sqlite_utils import Database

from ivt_core.errors import InvalidInputError


def _where(run_id: int, outcome: str | None, parse_failures: bool, search: str | None, source: str | None,
           iou_band: tuple[float, float] | None) -> tuple[str, list]:
    sql = " FROM trajectories t JOIN samples s ON s.id = t.sample_id WHERE t.run_id = ?"
    params: list = [run_id]
    if outcome:
        sql += " AND t.outcome = ?"
        params.append(outcome)
    if parse_failures:
        sql += " AND EXISTS (SELECT 1 FROM steps x WHERE x.trajectory_id = t.id AND x.parse_ok = 0)"
    if search:
        sql += " AND s.expression LIKE ?"
        params.append(f"%{search}%")
    if source:
        sql += " AND s.source = ?"
        params.append(source)
    if iou_band is not None:
        low, high = iou_band
        if not 0 <= low <= high <= 1:
            raise InvalidInputError(f"the IoU band must satisfy 0 <= from <= to <= 1, got {low} .. {high}")
        sql += " AND t.final_iou BETWEEN ? AND ?"
        params += [low, high]
    return sql, params


def trajectory_rows(db: Database, run_id: int, outcome: str | None = None, parse_failures: bool = False,
                    search: str | None = None, limit: int = 500, source: str | None = None,
                    iou_band: tuple[float, float] | None = None) -> list[dict]:
    """Trajectories of a run, worst final IoU first, with their sample's expression and source and the number of
    unreadable answers (``failures``). Raises InvalidInputError for an IoU band outside 0..1 or reversed."""
    where, params = _where(run_id, outcome, parse_failures, search, source, iou_band)
    sql = ("SELECT t.sample_id, s.expression, s.source, t.step0_iou, t.final_iou, t.oracle_iou, t.outcome, "
           "t.stop_step, (SELECT COUNT(*) FROM steps x WHERE x.trajectory_id = t.id AND x.parse_ok = 0) AS failures"
           + where + " ORDER BY t.final_iou, t.step0_iou, t.sample_id LIMIT ?")
    return list(db.query(sql, [*params, limit]))


def count_trajectory_rows(db: Database, run_id: int, outcome: str | None = None, parse_failures: bool = False,
                          search: str | None = None, source: str | None = None,
                          iou_band: tuple[float, float] | None = None) -> int:
    """How many trajectories ``trajectory_rows`` would list without its limit."""
    where, params = _where(run_id, outcome, parse_failures, search, source, iou_band)
    return next(db.query("SELECT COUNT(*) AS n" + where, params))["n"]


def run_sources(db: Database, run_id: int) -> list[str]:
    """The distinct sources of a run's samples (one for most datasets, several for mixed ones)."""
    return [r["source"] for r in db.query(
        "SELECT DISTINCT s.source FROM trajectories t JOIN samples s ON s.id = t.sample_id WHERE t.run_id = ? "
        "ORDER BY s.source", [run_id])]


def trajectory_steps(db: Database, run_id: int, sample_id: str) -> list[dict]:
    """The step rows of one sample's trajectory in a run, in step order ([] when there is none)."""
    return list(db.query(
        "SELECT x.* FROM steps x JOIN trajectories t ON t.id = x.trajectory_id WHERE t.run_id = ? AND "
        "t.sample_id = ? ORDER BY x.step", [run_id, sample_id]))


def final_ious(db: Database, run_ids: list[int]) -> list[dict]:
    """Every trajectory of the runs: run id, sample id, step-0 and final IoU, and the sample's expression."""
    marks = ", ".join("?" * len(run_ids))
    return list(db.query(f"SELECT t.run_id, t.sample_id, t.step0_iou, t.final_iou, s.expression FROM trajectories "
                         f"t JOIN samples s ON s.id = t.sample_id WHERE t.run_id IN ({marks})", list(run_ids)))
