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
    """Register a model, or find the one registered for the same paths and the same weights; return its id.

    The weights are told apart by their fingerprint (``ivt_core.fingerprint``). New weights at registered paths
    (retrained into the same folder, a shipped toy replaced) are a new model under ``name``; the model registered
    before is renamed "NAME (weights of DATE)", so its runs are never shown as runs of the new weights. A model
    registered before fingerprints existed keeps its id when its files are no newer than its registration, and is
    treated as earlier weights otherwise.
    """
    from ivt_core.fingerprint import newest_change, weights_fingerprint
    from ivt_core.store.db import write_transaction

    fingerprint = weights_fingerprint(base_path, adapter_path)
    with write_transaction(db):
        rows = list(db.query(
            "SELECT id, name, fingerprint, created_at, meta FROM models WHERE base_path = ? AND adapter_path = ? "
            "ORDER BY id DESC", [base_path, adapter_path]))
        current = next((r["id"] for r in rows if r["fingerprint"] == fingerprint), None)
        legacy = [r for r in rows if r["fingerprint"] == ""]
        if current is None and legacy and fingerprint and \
                newest_change(base_path, adapter_path) <= _epoch(legacy[0]["created_at"]) + 1:
            current = legacy[0]["id"]
            db.execute("UPDATE models SET fingerprint = ? WHERE id = ?", [fingerprint, current])
        if current is None:
            current = db.execute(
                "INSERT INTO models (name, base_path, adapter_path, family, parent_id, origin_job, created_at, "
                "meta, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [name, base_path, adapter_path, family, parent_id, origin_job, now(), json.dumps(meta or {}),
                 fingerprint],
            ).lastrowid
        for row in rows:
            if row["id"] != current:
                _retire(db, row, current)
            elif "weights_now_model" in (meta := json.loads(row["meta"])):  # its weights are back
                del meta["weights_now_model"]
                db.execute("UPDATE models SET meta = ? WHERE id = ?", [json.dumps(meta), current])
        return current


def _retire(db: Database, row: dict, current: int) -> None:
    """Mark a model whose weights are no longer at its paths: "NAME (weights of DATE)", and in its meta the model
    registered for the weights there now."""
    name = row["name"] if " (weights of " in row["name"] else f"{row['name']} (weights of {row['created_at'][:10]})"
    meta = json.loads(row["meta"])
    if name != row["name"] or meta.get("weights_now_model") != current:  # no write when marked already
        meta["weights_now_model"] = current
        db.execute("UPDATE models SET name = ?, meta = ? WHERE id = ?", [name, json.dumps(meta), row["id"]])


def _epoch(timestamp: str) -> float:
    """Seconds since the epoch of a stored ``created_at``; 0 for one that cannot be read (then any file is newer:
    the registration is taken for earlier weights, the safe side)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def weights_changed(db: Database, model_id: int) -> str:
    """"" when the weights at a registered model's paths are still the ones registered; else one line saying
    what changed (for refusing to resume a run with other weights, and for not showing another model's card)."""
    from ivt_core.fingerprint import weights_fingerprint

    model = get_model(db, model_id)
    where = model["base_path"] + (f" + {model['adapter_path']}" if model["adapter_path"] else "")
    since = f"since model {model_id} ({model['name']}) was registered"
    if "weights_now_model" in model["meta"]:
        return f"the weights at {where} changed {since} (they are model {model['meta']['weights_now_model']} now)"
    if not model["fingerprint"]:
        return ""
    now_print = weights_fingerprint(model["base_path"], model["adapter_path"])
    if now_print == model["fingerprint"]:
        return ""
    found = f"weights {now_print}" if now_print else "no weights"
    return f"the weights at {where} changed {since} (fingerprint {model['fingerprint']}, now {found})"


def get_model(db: Database, model_id: int) -> dict:
    rows = list(db.query("SELECT * FROM models WHERE id = ?", [model_id]))
    if not rows:
        raise NotFoundError(f"no model with id {model_id}")
    return {**rows[0], "meta": json.loads(rows[0]["meta"])}


def list_models(db: Database) -> list[dict]:
    return [{**r, "meta": json.loads(r["meta"])} for r in db.query("SELECT * FROM models ORDER BY id")]


def model_names(db: Database) -> dict[int, str]:
    """{model id: name} of every registered model (how run lists label a run's model)."""
    return {m["id"]: m["name"] for m in db.query("SELECT id, name FROM models")}


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
