"""Registered models: a base checkpoint path, an optional adapter, the family and where it came from."""

from __future__ import annotations

import json

from sqlite_utils import Database

from ivt_core.errors import NotFoundError
from ivt_core.store.samples import now


def register_model(
    db: Database,
    name: str,
    base_path: str,
    family: str,
    adapter_path: str = "",
    parent_id: int | None = None,
    origin_job: int | None = None,
    meta: dict | None = None,
) -> int:
    """Register a model (or find the one already registered for the same paths); return its id."""
    existing = list(db.query(
        "SELECT id FROM models WHERE base_path = ? AND adapter_path = ?", [base_path, adapter_path]))
    if existing:
        return existing[0]["id"]
    cursor = db.execute(
        "INSERT INTO models (name, base_path, adapter_path, family, parent_id, origin_job, created_at, meta) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [name, base_path, adapter_path, family, parent_id, origin_job, now(), json.dumps(meta or {})],
    )
    return cursor.lastrowid


def get_model(db: Database, model_id: int) -> dict:
    rows = list(db.query("SELECT * FROM models WHERE id = ?", [model_id]))
    if not rows:
        raise NotFoundError(f"no model with id {model_id}")
    return {**rows[0], "meta": json.loads(rows[0]["meta"])}


def list_models(db: Database) -> list[dict]:
    return [{**r, "meta": json.loads(r["meta"])} for r in db.query("SELECT * FROM models ORDER BY id")]


def model_of_jobs(db: Database, job_ids: list[int]) -> dict | None:
    """The newest model registered by one of ``job_ids`` (a training job and the jobs that resumed it), or None."""
    if not job_ids:
        return None
    marks = ", ".join("?" * len(job_ids))
    rows = list(db.query(f"SELECT id FROM models WHERE origin_job IN ({marks}) ORDER BY id DESC LIMIT 1", job_ids))
    return get_model(db, rows[0]["id"]) if rows else None


def set_model_meta(db: Database, model_id: int, key: str, value) -> None:
    """Set one key of a model's meta (e.g. its verifier test on a run), keeping the others."""
    from ivt_core.store.db import write_transaction

    with write_transaction(db):
        meta = get_model(db, model_id)["meta"]
        meta[key] = value
        db.execute("UPDATE models SET meta = ? WHERE id = ?", [json.dumps(meta), model_id])
