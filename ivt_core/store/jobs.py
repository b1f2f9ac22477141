"""Background jobs: rows for status, pid, heartbeat, progress, result; and their metric series."""

from __future__ import annotations

import json

from sqlite_utils import Database

from ivt_core.errors import NotFoundError
from ivt_core.store.samples import now

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "interrupted")


def create_job(db: Database, kind: str, argv: list[str], log_path: str, resumed_from: int | None = None,
               waits_for: int | None = None, needs_success: bool = True) -> int:
    cursor = db.execute(
        "INSERT INTO jobs (kind, status, argv, created_at, log_path, resumed_from, waits_for, needs_success) "
        "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
        [kind, json.dumps(argv), now(), log_path, resumed_from, waits_for, int(needs_success)],
    )
    return cursor.lastrowid


def update_job(db: Database, job_id: int, **fields) -> None:
    """Set columns of a job (``result`` is JSON-encoded)."""
    if "result" in fields and not isinstance(fields["result"], str):
        fields["result"] = json.dumps(fields["result"])
    columns = ", ".join(f"{name} = ?" for name in fields)
    db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", [*fields.values(), job_id])


def get_job(db: Database, job_id: int) -> dict:
    rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
    if not rows:
        raise NotFoundError(f"no job with id {job_id}; `ivt jobs list` shows the jobs of this workspace")
    return _decode(rows[0])


def list_jobs(db: Database, limit: int = 50) -> list[dict]:
    return [_decode(r) for r in db.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", [limit])]


def _decode(row: dict) -> dict:
    out = dict(row)
    out["argv"] = json.loads(row["argv"])
    out["result"] = json.loads(row["result"]) if row["result"] else None
    return out


def add_metric(db: Database, job_id: int, step: int, name: str, value: float) -> None:
    db.execute("INSERT INTO job_metrics (job_id, step, name, value, at) VALUES (?, ?, ?, ?, ?)",
               [job_id, step, name, float(value), now()])


def job_metrics(db: Database, job_id: int) -> dict[str, list[tuple[int, float]]]:
    """Metric series of a job: {name: [(step, value), ...]} in step order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in db.query("SELECT step, name, value FROM job_metrics WHERE job_id = ? ORDER BY name, step", [job_id]):
        series.setdefault(row["name"], []).append((row["step"], row["value"]))
    return series
