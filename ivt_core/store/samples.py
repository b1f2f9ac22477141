"""Datasets and samples: writing an imported or generated split, reading samples back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlite_utils import Database

from ivt_core.boxes import Box
from ivt_core.data.sample import Sample
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.limits import check_name


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def upsert_dataset(db: Database, name: str, kind: str, meta: dict) -> None:
    """Create the dataset row, or update its kind and meta. Raises InvalidInputError for a name that cannot name
    a dataset (``limits.check_name``)."""
    check_name(name)
    db.execute(
        "INSERT INTO datasets (name, kind, created_at, meta) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, meta = excluded.meta",
        [name, kind, now(), json.dumps(meta)],
    )


def get_dataset(db: Database, name: str) -> dict | None:
    rows = list(db.query("SELECT * FROM datasets WHERE name = ?", [name]))
    return {**rows[0], "meta": json.loads(rows[0]["meta"])} if rows else None


def list_datasets(db: Database) -> list[dict]:
    """Datasets with their sample counts per split."""
    counts: dict[str, dict[str, int]] = {}
    for row in db.query("SELECT dataset, split, COUNT(*) AS n FROM samples GROUP BY dataset, split"):
        counts.setdefault(row["dataset"], {})[row["split"]] = row["n"]
    return [{"name": r["name"], "kind": r["kind"], "splits": counts.get(r["name"], {})}
            for r in db.query("SELECT name, kind FROM datasets ORDER BY name")]


def upsert_samples(db: Database, samples: Iterable[Sample]) -> int:
    """Insert samples, replacing any with the same id in the same dataset (re-generation is idempotent). Returns
    the count. Raises InvalidInputError, writing nothing, if an id belongs to another dataset (replacing it would
    move that dataset's row, and the runs and traces that point at it, into this one)."""
    samples = list(samples)
    taken = _ids_in_other_datasets(db, samples)
    if taken:
        sample_id, other = next(iter(taken.items()))
        raise InvalidInputError(f"sample id {sample_id!r} already belongs to dataset {other!r} ({len(taken)} ids "
                                "collide); import or generate under another name")
    rows = [
        {
            "id": s.id, "dataset": s.dataset, "split": s.split, "image_path": s.image_path,
            "width": s.width, "height": s.height, "expression": s.expression,
            "x1": s.bbox.x1, "y1": s.bbox.y1, "x2": s.bbox.x2, "y2": s.bbox.y2,
            "source": s.source, "meta": json.dumps(s.meta),
        }
        for s in samples
    ]
    db["samples"].upsert_all(rows, pk="id")
    return len(rows)


def _ids_in_other_datasets(db: Database, samples: list[Sample]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(samples), 500):
        chunk = samples[start:start + 500]
        wanted = {s.id: s.dataset for s in chunk}
        marks = ", ".join("?" * len(wanted))
        for row in db.query(f"SELECT id, dataset FROM samples WHERE id IN ({marks})", list(wanted)):
            if row["dataset"] != wanted[row["id"]]:
                found[row["id"]] = row["dataset"]
    return found


def split_size(db: Database, dataset: str, split: str) -> int:
    """How many samples a dataset split holds (0 for none)."""
    return db.execute("SELECT COUNT(*) FROM samples WHERE dataset = ? AND split = ?", [dataset, split]).fetchone()[0]


def dataset_rows(db: Database, dataset: str) -> list[dict]:
    """Every sample row of a dataset (all splits) in id order, as stored."""
    return list(db.query("SELECT * FROM samples WHERE dataset = ? ORDER BY id", [dataset]))


def record_import(db: Database, dataset: str, fmt: str, path: str, split: str, read: int, imported: int,
                  skipped: int, reasons: dict) -> None:
    """Keep what an import read, kept and skipped (and why)."""
    db.execute(
        "INSERT INTO imports (dataset, format, path, split, created_at, read, imported, skipped, reasons) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [dataset, fmt, path, split, now(), read, imported, skipped, json.dumps(reasons)],
    )


def _row_to_sample(row: dict) -> Sample:
    return Sample(
        id=row["id"], dataset=row["dataset"], split=row["split"], image_path=row["image_path"],
        width=row["width"], height=row["height"], expression=row["expression"],
        bbox=Box(row["x1"], row["y1"], row["x2"], row["y2"]), source=row["source"],
        meta=json.loads(row["meta"]),
    )


def get_samples(db: Database, dataset: str, split: str, limit: int | None = None, offset: int = 0) -> list[Sample]:
    """Samples of a dataset split in id order (``limit`` of them from ``offset``).

    Raises NotFoundError if the dataset is unknown or the split is empty, naming what exists.
    """
    if get_dataset(db, dataset) is None:
        known = ", ".join(d["name"] for d in list_datasets(db)) or "none yet"
        raise NotFoundError(
            f"unknown dataset {dataset!r} in this workspace (known: {known}); "
            "create it with `ivt data shapes` or import one"
        )
    sql = "SELECT * FROM samples WHERE dataset = ? AND split = ? ORDER BY id"
    params: list = [dataset, split]
    if limit is not None or offset:
        sql += " LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
    samples = [_row_to_sample(r) for r in db.query(sql, params)]
    if not samples:
        splits = list_datasets(db)
        have = next((d["splits"] for d in splits if d["name"] == dataset), {})
        raise NotFoundError(
            f"dataset {dataset!r} has no samples in split {split!r} (it has: {have or 'nothing'}); "
            f"generate or import that split first"
        )
    return samples


def get_sample(db: Database, sample_id: str) -> Sample:
    rows = list(db.query("SELECT * FROM samples WHERE id = ?", [sample_id]))
    if not rows:
        raise NotFoundError(f"no sample with id {sample_id!r}")
    return _row_to_sample(rows[0])
