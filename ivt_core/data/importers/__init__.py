"""Importers of public referring-expression benchmarks from local files (nothing is downloaded).

``import_dataset(workspace, fmt, path, ...)`` reads a source in one of ``FORMATS``, validates every row (bad
rows are skipped and counted with file, row and reason), and writes dataset, samples and a summary atomically.
"""

from __future__ import annotations

from pathlib import Path

from ivt_core.data.importers import jsonl, parquet_formats, refcocog
from ivt_core.data.importers.common import Collector, ImportSummary, write_import
from ivt_core.data.importers.mix import build_mix
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.limits import check_name
from ivt_core.workspace import Workspace

FORMATS = ("refcocog", "refcocog-parquet", "ref-l4", "ref-adv-s", "jsonl", "mix")
DEFAULT_SPLIT = {"refcocog": "val", "refcocog-parquet": "val", "ref-l4": "val", "ref-adv-s": "test", "jsonl": "test"}


def import_dataset(
    workspace: Workspace,
    fmt: str,
    path: str,
    split: str | None = None,
    images: str | None = None,
    limit: int | None = None,
    name: str | None = None,
    sizes: list[int] | None = None,
    seed: int = 0,
    replace: bool = False,
) -> ImportSummary:
    """Import one source; return the summary. Raises IVTError subclasses saying what to fix; writes nothing then.
    A split the dataset already holds is refused unless ``replace`` (then samples with the same ids are replaced)."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if limit is not None and not 1 <= limit <= 1_000_000_000:
        raise InvalidInputError(f"--limit must be between 1 and 1,000,000,000, got {limit}")
    check_name(name or fmt)
    if fmt == "mix":
        sources = [s for s in path.split(",") if s]
        name = name or "mix"
        samples, meta = build_mix(workspace, sources, sizes or [2400, 510, 505], seed, name)
        summary = ImportSummary(name, "mix", path, "train,val,test", read=len(samples))
        write_import(workspace, summary, samples, "mix", meta, replace)
        return summary
    source = Path(path).expanduser()
    if not source.exists():
        raise NotFoundError(f"{path} does not exist; give the file or folder of the {fmt} data")
    image_dir = Path(images).expanduser() if images else None
    if image_dir is not None and not image_dir.is_dir():
        raise NotFoundError(f"--images {images} is not a folder")
    split = split or DEFAULT_SPLIT[fmt]
    summary = ImportSummary(name or fmt, fmt, str(source.resolve()), split)
    collector = Collector(workspace, summary, limit)
    if fmt == "refcocog":
        refcocog.import_rows(collector, source, split, image_dir)
    elif fmt == "refcocog-parquet":
        parquet_formats.import_refcocog_parquet(collector, source, split)
    elif fmt == "ref-l4":
        parquet_formats.import_ref_l4(collector, source, split, image_dir)
    elif fmt == "ref-adv-s":
        parquet_formats.import_ref_adv_s(collector, source, split)
    else:
        jsonl.import_rows(collector, source, split, image_dir)
    write_import(workspace, summary, list(collector.samples.values()), fmt,
                 {"format": fmt, "path": summary.path}, replace)
    return summary
