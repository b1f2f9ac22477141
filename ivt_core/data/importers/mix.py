"""A balanced, seeded mixture of datasets already in the workspace, split into train / val / test.

Like the paper's 2,400 / 510 / 505 mix of RefCOCOg, Ref-Adv-s and Ref-L4: each split takes an equal share
from every source (the remainder going to the first sources), drawn without replacement by a seeded shuffle
of each source's samples, so no sample lands in two splits. Every mixed sample records its source dataset
(``source``) and original id (``meta.origin``), and the dataset records the seed and sizes.
"""

from __future__ import annotations

import random

from ivt_core.data.sample import Sample
from ivt_core.errors import InvalidInputError
from ivt_core.store.samples import dataset_rows, get_dataset
from ivt_core.workspace import Workspace

SPLITS = ("train", "val", "test")


def build_mix(workspace: Workspace, sources: list[str], sizes: list[int], seed: int, name: str):
    """Return (samples, meta) for the mixture. Raises InvalidInputError if a source is too small."""
    if len(sizes) != 3 or any(n < 0 for n in sizes):
        raise InvalidInputError("--sizes needs three non-negative numbers: train,val,test (e.g. 2400,510,505)")
    if not sources or len(set(sources)) != len(sources):
        raise InvalidInputError("give the source datasets once each, comma-separated")
    db = workspace.connect()
    try:
        pools = {}
        for source in sources:
            if get_dataset(db, source) is None:
                raise InvalidInputError(f"source dataset {source!r} is not in this workspace; import it first")
            rows = dataset_rows(db, source)
            random.Random(f"{seed}:{source}").shuffle(rows)
            pools[source] = rows
        needed = {s: 0 for s in sources}
        plan = {}
        for split, size in zip(SPLITS, sizes, strict=True):
            share = [size // len(sources) + (1 if i < size % len(sources) else 0) for i in range(len(sources))]
            plan[split] = dict(zip(sources, share, strict=True))
            for source, n in plan[split].items():
                needed[source] += n
        short = {s: (needed[s], len(pools[s])) for s in sources if needed[s] > len(pools[s])}
        if short:
            detail = ", ".join(f"{s} needs {n} but has {have}" for s, (n, have) in short.items())
            raise InvalidInputError(f"sources too small for these sizes: {detail}; lower --sizes")
        samples = []
        cursor = {s: 0 for s in sources}
        for split in SPLITS:
            for source, n in plan[split].items():
                for row in pools[source][cursor[source]: cursor[source] + n]:
                    samples.append(_copy(row, name, split, source))
                cursor[source] += n
        meta = {"seed": seed, "sources": sources, "sizes": dict(zip(SPLITS, sizes, strict=True)), "plan": plan}
        return samples, meta
    finally:
        db.close()


def _copy(row: dict, name: str, split: str, source: str) -> Sample:
    import json

    from ivt_core.boxes import Box

    meta = json.loads(row["meta"])
    return Sample(id=f"{name}-{row['id']}", dataset=name, split=split, image_path=row["image_path"],
                  width=row["width"], height=row["height"], expression=row["expression"],
                  bbox=Box(row["x1"], row["y1"], row["x2"], row["y2"]), source=source,
                  meta={**meta, "origin": row["id"], "origin_split": row["split"]})


