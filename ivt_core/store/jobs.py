"""Background jobs: rows for status, pid, heartbeat, progress, result; and their metric series."""

from __future__ import annotations

import json

from sqlite_utils import Database

from ivt_core.errors import NotFoundError
from ivt_core.store.samples import now

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "interrupted")


def create_job(db: Database, kind: str, argv: list[str], log_path: str, resumed_from: int | None = None,
               waits_for: int | None = None, needs_success: bool = True, config: dict | None = None) -> int:
    """A queued job. ``config``: its settings (a config dataclass as a dict); ``argv``: the command shown."""
    cursor = db.execute(
        "INSERT INTO jobs (kind, status, argv, created_at, log_path, resumed_from, waits_for, needs_success, config) "
        "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
        [kind, json.dumps(argv), now(), log_path, resumed_from, waits_for, int(needs_success),
         json.dumps(config) if config is not None else None],
    )
    return cursor.lastrowid


def update_job(db: Database, job_id: int, **fields) -> None:
    """Set columns of a job (``result`` is JSON-encoded)."""
    for name in ("result", "config", "argv"):
        if name in fields and fields[name] is not None and not isinstance(fields[name], str):
            fields[name] = json.dumps(fields[name])
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
    out["config"] = json.loads(row["config"]) if row.get("config") else None  # None: made before job configs
    return out


def resumed_by(db: Database, job_id: int) -> int | None:
    """The newest job that resumed job ``job_id``, or None."""
    rows = list(db.query("SELECT id FROM jobs WHERE resumed_from = ? ORDER BY id DESC LIMIT 1", [job_id]))
    return rows[0]["id"] if rows else None


def newest_active_job(db: Database, kinds: tuple[str, ...]) -> int | None:
    """The newest job of one of ``kinds`` still queued or running, or None."""
    marks = ", ".join("?" * len(kinds))
    rows = list(db.query(f"SELECT id FROM jobs WHERE kind IN ({marks}) AND status IN ('queued', 'running') "
                         "ORDER BY id DESC LIMIT 1", list(kinds)))
    return rows[0]["id"] if rows else None


def waiting_jobs(db: Database) -> list[dict]:
    """Queued jobs that wait for another one and have not been started: id, kind, the awaited job's id and
    status, and whether they need it to succeed."""
    return list(db.query(
        "SELECT j.id, j.kind, j.config, j.needs_success, w.status AS awaited, w.id AS awaited_id FROM jobs j "
        "JOIN jobs w ON w.id = j.waits_for WHERE j.status = 'queued' AND j.pid IS NULL"))


def claim_job(db: Database, job_id: int) -> bool:
    """Mark a waiting job as being started (pid -1); False if another process claimed it first."""
    return db.execute("UPDATE jobs SET pid = -1 WHERE id = ? AND pid IS NULL", [job_id]).rowcount == 1


def unfinished_jobs(db: Database) -> list[dict]:
    """Jobs that should have a live process: running, or queued and started or not waiting for another job."""
    return list(db.query("SELECT id, pid, status, heartbeat_at, created_at FROM jobs WHERE status IN (?, ?) "
                         "AND NOT (status = 'queued' AND waits_for IS NOT NULL AND pid IS NULL)", list(ACTIVE)))


def add_metric(db: Database, job_id: int, step: int, name: str, value: float) -> None:
    db.execute("INSERT INTO job_metrics (job_id, step, name, value, at) VALUES (?, ?, ?, ?, ?)",
               [job_id, step, name, float(value), now()])


def job_metric_times(db: Database, job_id: int) -> dict[int, str]:
    """{step: when its first metric was written} of a job (ISO times), to draw curves against time."""
    return {row["step"]: row["at"] for row in db.query(
        "SELECT step, MIN(at) AS at FROM job_metrics WHERE job_id = ? GROUP BY step", [job_id])}


def job_metrics(db: Database, job_id: int) -> dict[str, list[tuple[int, float]]]:
    """Metric series of a job: {name: [(step, value), ...]} in step order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in db.query("SELECT step, name, value FROM job_metrics WHERE job_id = ? ORDER BY name, step", [job_id]):
        series.setdefault(row["name"], []).append((row["step"], row["value"]))
    return series
