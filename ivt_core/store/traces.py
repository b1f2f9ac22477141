"""Corrective traces and their revisions; every change is a new version, never an overwrite.

A trace row holds its current state (status, steps as JSON, version); ``trace_revisions`` holds one row per
change with the reviewer, the time, the diff and a snapshot, so the history is complete. Updates name the
version they were made against; a stale version raises ``TraceConflict`` and changes nothing.
"""

from __future__ import annotations

import json

from sqlite_utils import Database

from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.store.db import write_transaction
from ivt_core.store.samples import now

STATUSES = ("pending", "approved", "rejected")


class TraceConflict(InvalidInputError):
    """The trace changed since the caller read it; reload and redo the edit."""


def _search_text(expression: str, steps: list[dict]) -> str:
    return " ".join([expression, *(s.get("reasoning", "") for s in steps)])


def insert_trace(db: Database, fields: dict, reviewer: str, expression: str) -> int | None:
    """Insert a trace (version 1) and its 'create' revision; None if (run, sample, teacher) exists already."""
    row = {**fields, "version": 1, "created_at": now(), "updated_at": now(),
           "search_text": _search_text(expression, fields["steps"])}
    for key in ("steps", "flags", "meta", "student_box"):
        if not isinstance(row.get(key), str) and row.get(key) is not None:
            row[key] = json.dumps(row[key])
    with write_transaction(db):
        columns = ", ".join(row)
        cursor = db.execute(
            f"INSERT OR IGNORE INTO traces ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        if cursor.rowcount == 0:
            return None
        trace_id = cursor.lastrowid
        _revision(db, trace_id, 1, reviewer, "create", {}, get_trace(db, trace_id))
    return trace_id


def _revision(db: Database, trace_id: int, version: int, reviewer: str, action: str, diff: dict, snapshot: dict):
    db.execute(
        "INSERT INTO trace_revisions (trace_id, version, reviewer, at, action, diff, snapshot) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [trace_id, version, reviewer, now(), action, json.dumps(diff),
         json.dumps({"status": snapshot["status"], "steps": snapshot["steps"], "flags": snapshot["flags"]})],
    )


def _decode(row: dict) -> dict:
    out = dict(row)
    for key in ("steps", "flags", "meta"):
        out[key] = json.loads(row[key])
    out["student_box"] = json.loads(row["student_box"]) if row["student_box"] else None
    return out


def get_trace(db: Database, trace_id: int) -> dict:
    rows = list(db.query("SELECT * FROM traces WHERE id = ?", [trace_id]))
    if not rows:
        raise NotFoundError(f"no trace with id {trace_id}; `ivt traces list` shows them")
    return _decode(rows[0])


FILTERS = {
    "status": "t.status = ?",
    "dataset": "s.dataset = ?",
    "teacher": "t.teacher = ?",
    "kind": "t.kind = ?",
    "iou_min": "t.student_iou >= ?",
    "iou_max": "t.student_iou <= ?",
    "search": "t.id IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?)",
    "after_id": "t.id > ?",
    "before_id": "t.id < ?",
}


def _where(**filters) -> tuple[str, list]:
    """SQL WHERE clause and parameters for the given filters (None or empty = not filtered)."""
    clauses, params = [], []
    for name, value in filters.items():
        if name == "search" and isinstance(value, str):
            value = value.replace('"', " ").strip()  # nothing left to search for: not filtered
        if value is None or value == "":
            continue
        clauses.append(FILTERS[name])
        # full-text search: each word quoted, so user text is never read as FTS syntax
        params.append(" ".join(f'"{w}"' for w in value.replace('"', " ").split()) if name == "search" else value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_traces(db: Database, limit: int = 100, offset: int = 0, newest_first: bool = False, **filters) -> list[dict]:
    """Traces matching the filters (status, dataset, teacher, kind, iou_min, iou_max, search, after_id,
    before_id), oldest first unless ``newest_first``."""
    where, params = _where(**filters)
    order = "DESC" if newest_first else "ASC"
    sql = (f"SELECT t.* FROM traces t JOIN samples s ON s.id = t.sample_id{where} ORDER BY t.id {order} "
           f"LIMIT ? OFFSET ?")
    return [_decode(r) for r in db.query(sql, [*params, limit, offset])]


def matching_ids(db: Database, **filters) -> list[int]:
    """Ids of every trace matching the filters, oldest first (for bulk actions)."""
    where, params = _where(**filters)
    sql = f"SELECT t.id FROM traces t JOIN samples s ON s.id = t.sample_id{where} ORDER BY t.id"
    return [row["id"] for row in db.query(sql, params)]


def count_traces(db: Database, **filters) -> dict[str, int]:
    """Counts per status for the filters (a ``status`` filter is ignored: every status is counted)."""
    filters.pop("status", None)
    where, params = _where(**filters)
    counts = dict.fromkeys(STATUSES, 0)
    # the samples table only when a filter needs it: without the join, the count reads the status index alone
    join = " JOIN samples s ON s.id = t.sample_id" if filters.get("dataset") else ""
    sql = f"SELECT t.status, COUNT(*) AS n FROM traces t{join}{where} GROUP BY t.status"
    for row in db.query(sql, params):
        counts[row["status"]] = row["n"]
    return counts


def update_trace(db: Database, trace_id: int, expected_version: int, reviewer: str, action: str,
                 changes: dict, diff: dict, expression: str) -> int:
    """Apply ``changes`` (status / steps / flags / final_iou) if the trace is still at ``expected_version``.

    Returns the new version. Raises TraceConflict if someone changed it meanwhile (nothing is written).
    """
    encoded = {k: (json.dumps(v) if k in ("steps", "flags") else v) for k, v in changes.items()}
    if "steps" in changes:
        encoded["search_text"] = _search_text(expression, changes["steps"])
    encoded["updated_at"] = now()
    columns = ", ".join(f"{k} = ?" for k in encoded)
    with write_transaction(db):
        cursor = db.execute(
            f"UPDATE traces SET {columns}, version = version + 1 WHERE id = ? AND version = ?",
            [*encoded.values(), trace_id, expected_version])
        if cursor.rowcount == 0:
            current = get_trace(db, trace_id)
            if expected_version > current["version"]:
                raise InvalidInputError(f"trace {trace_id} is at version {current['version']}; version "
                                        f"{expected_version} does not exist yet (check the --version you gave)")
            raise TraceConflict(
                f"trace {trace_id} was changed to version {current['version']} (you edited version "
                f"{expected_version}); reload it and redo your change")
        _revision(db, trace_id, expected_version + 1, reviewer, action, diff, get_trace(db, trace_id))
    return expected_version + 1


def revisions(db: Database, trace_id: int) -> list[dict]:
    rows = db.query("SELECT * FROM trace_revisions WHERE trace_id = ? ORDER BY version", [trace_id])
    return [{**r, "diff": json.loads(r["diff"]), "snapshot": json.loads(r["snapshot"])} for r in rows]


def traced_samples(db: Database, run_id: int, teacher: str) -> set[str]:
    """The samples of a run that already have a trace by ``teacher``."""
    return {r["sample_id"] for r in db.query(
        "SELECT sample_id FROM traces WHERE run_id = ? AND teacher = ?", [run_id, teacher])}


def has_trace(db: Database, sample_id: str, **equal) -> bool:
    """Whether a trace of ``sample_id`` exists whose columns equal ``equal`` (lists and dicts compared as the
    JSON they are stored as)."""
    allowed = {"teacher", "origin", "steps", "student_box", "run_id", "kind"}
    if set(equal) - allowed:
        raise ValueError(f"has_trace compares only {sorted(allowed)}")
    where = "".join(f" AND {name} = ?" for name in equal)
    values = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in equal.values()]
    return bool(list(db.query(f"SELECT id FROM traces WHERE sample_id = ?{where} LIMIT 1", [sample_id, *values])))


def traces_of_sample(db: Database, sample_id: str) -> list[dict]:
    """The traces written for a sample (id, status, kind), newest first."""
    return list(db.query("SELECT id, status, kind FROM traces WHERE sample_id = ? ORDER BY id DESC", [sample_id]))
