"""Writing shapes-world splits into a workspace (images content-addressed, samples in the store)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from ivt_core.data.sample import Sample
from ivt_core.data.shapes import ShapesConfig, generate
from ivt_core.errors import InvalidInputError
from ivt_core.limits import check_name
from ivt_core.store import write_transaction
from ivt_core.store.samples import get_dataset, upsert_dataset, upsert_samples
from ivt_core.workspace import Workspace

DEFAULT_NAME = "shapes"


def write_shapes_split(
    workspace: Workspace,
    split: str,
    n: int,
    seed: int = 0,
    name: str = "shapes",
    config: ShapesConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Generate ``n`` samples of ``split`` into dataset ``name``; returns how many were written.

    Idempotent: the same (seed, split, index) gives the same sample id and content. Sample ids carry the dataset
    name (``<name>:<id>``), except in the default ``shapes`` dataset, whose ids predate that. Raises
    InvalidInputError if ``name`` already holds a dataset of another kind, seed or world version (use another
    ``--name``), or is not a valid name.
    """
    check_name(name)
    config = (config or ShapesConfig()).check()
    meta = {"seed": seed, "world": asdict(config)}
    db = workspace.connect()
    try:
        existing = get_dataset(db, name)
        if existing and (existing["kind"] != "shapes" or existing["meta"] != json_roundtrip(meta)):
            raise InvalidInputError(
                f"dataset {name!r} already exists with a different kind, seed or world; "
                f"choose another --name or the same --seed ({existing['meta'].get('seed')})"
            )
        samples = []
        for item in generate(config, seed, split, n):
            path = workspace.store_image(item.image)
            samples.append(Sample(
                id=item.id if name == DEFAULT_NAME else f"{name}:{item.id}", dataset=name, split=split,
                image_path=path, width=item.image.width,
                height=item.image.height, expression=item.expression, bbox=item.bbox, source="shapes",
                meta=item.meta,
            ))
            if progress:
                progress(1)
        with write_transaction(db):
            upsert_dataset(db, name, "shapes", meta)
            upsert_samples(db, samples)
        return len(samples)
    finally:
        db.close()


def json_roundtrip(value: dict) -> dict:
    import json

    return json.loads(json.dumps(value))
