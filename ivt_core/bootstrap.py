"""Filling a fresh workspace with the embedded default: shapes-world splits (and, once shipped, the toy model)."""

from __future__ import annotations

from ivt_core.data.shapes_split import write_shapes_split
from ivt_core.store.samples import list_datasets
from ivt_core.workspace import Workspace

DEFAULT_SPLITS = {"val": 100, "test": 200}


def ensure_default_data(workspace: Workspace, seed: int = 0) -> dict[str, int]:
    """Generate the default shapes splits that are missing; return {split: samples written now}."""
    db = workspace.connect()
    try:
        have = next((d["splits"] for d in list_datasets(db) if d["name"] == "shapes"), {})
    finally:
        db.close()
    written = {}
    for split, n in DEFAULT_SPLITS.items():
        if have.get(split, 0) < n:
            written[split] = write_shapes_split(workspace, split, n, seed)
    return written
