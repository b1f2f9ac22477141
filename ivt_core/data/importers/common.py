"""What every importer shares: row validation with counted reasons, image checks, the atomic write.

An importer reads its files into ``Candidate`` rows and calls ``Collector.add`` for each; bad rows are skipped
and counted by reason, with the file and row named in the first examples. Nothing is written until the whole
source has been read: ``write_import`` then stores the dataset, its samples and the import summary in one
transaction, so a failed import leaves the workspace as it was. Sample ids come from the source's own ids, so
importing the same source again replaces rows instead of duplicating them.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ivt_core.boxes import Box
from ivt_core.data.sample import Sample
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.limits import MAX_EXPRESSION_CHARS, MAX_IMAGE_PIXELS
from ivt_core.store import write_transaction
from ivt_core.store.samples import get_dataset, record_import, split_size, upsert_dataset, upsert_samples
from ivt_core.workspace import Workspace

EXAMPLES_PER_REASON = 5


@dataclass
class ImportSummary:
    dataset: str
    format: str
    path: str
    split: str
    read: int = 0
    imported: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def text(self) -> str:
        lines = [f"{self.format} {self.path} -> dataset {self.dataset!r}, split {self.split!r}: read {self.read}, "
                 f"imported {self.imported}, skipped {self.skipped}"]
        for reason, count in self.reasons.most_common():
            lines.append(f"  skipped {count}: {reason}")
            lines += [f"    e.g. {example}" for example in self.examples.get(reason, [])]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "format": self.format, "path": self.path, "split": self.split,
                "read": self.read, "imported": self.imported, "skipped": self.skipped,
                "reasons": dict(self.reasons), "examples": self.examples}


class Collector:
    """Validates candidate rows into samples, counting what it skips."""

    def __init__(self, workspace: Workspace, summary: ImportSummary, limit: int | None = None):
        self.workspace = workspace
        self.summary = summary
        self.limit = limit
        self.samples: dict[str, Sample] = {}

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.samples) >= self.limit

    def skip(self, reason: str, where: str) -> None:
        self.summary.reasons[reason] += 1
        examples = self.summary.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(where)

    def add(self, sample_id: str, where: str, expression: object, box: Box | None, image_path: str | None,
            size: tuple[int, int] | None, source: str, meta: dict | None = None) -> None:
        """Validate one row and keep it, or count why not. ``where`` names the file and row.

        ``sample_id`` is the source's own id; the stored id is ``<dataset>/<sample_id>``.
        """
        self.summary.read += 1
        if not isinstance(expression, str) or not expression.strip():
            return self.skip("empty or missing expression", where)
        if len(expression) > MAX_EXPRESSION_CHARS:
            return self.skip(f"expression longer than {MAX_EXPRESSION_CHARS:,} characters",
                             f"{where}: {len(expression):,} characters")
        if image_path is None or size is None:
            return self.skip("missing or unreadable image", where)
        if box is None:
            return self.skip("missing or malformed box", where)
        width, height = size
        if box.is_empty():
            return self.skip("empty box (zero width or height)", f"{where}: {box.to_xyxy()}")
        if not box.inside(width, height, tolerance=1.0):
            return self.skip("box outside the image", f"{where}: {[round(v, 1) for v in box.to_xyxy()]} in "
                                                      f"{width}x{height}")
        full_id = f"{self.summary.dataset}/{sample_id}"
        self.samples[full_id] = Sample(
            id=full_id, dataset=self.summary.dataset, split=self.summary.split, image_path=image_path,
            width=width, height=height, expression=" ".join(expression.split()), bbox=box.clip(width, height),
            source=source, meta=meta or {},
        )

    def image_file(self, path: Path) -> tuple[str | None, tuple[int, int] | None]:
        """(absolute path, size) of an image file on disk, or (None, None) if missing, unreadable, truncated or
        larger than ``MAX_IMAGE_PIXELS`` (every image is decoded in full here, so that a broken one is counted
        now instead of aborting an evaluation later)."""
        try:
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    return None, None
                image.load()
                return str(path.resolve()), image.size
        except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
                SyntaxError):
            return None, None

    def image_bytes(self, data: bytes | None) -> tuple[str | None, tuple[int, int] | None]:
        """Store embedded image bytes in the workspace (content-addressed); (None, None) if not an image."""
        if not data:
            return None, None
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    return None, None
                image.load()
                return self.workspace.store_image(image.convert("RGB")), image.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError):
            return None, None


def box_from(values: object, fmt: str) -> Box | None:
    """A pixel box from a row's box field in ``fmt`` ('xywh' or 'xyxy'), or None if malformed."""
    try:
        numbers = [float(v) for v in values]  # type: ignore[union-attr]
        if len(numbers) != 4:
            return None
        return Box.from_xywh(numbers) if fmt == "xywh" else Box.from_xyxy(numbers)
    except (TypeError, ValueError, InvalidInputError):
        return None


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise NotFoundError(f"{what} not found: {path}")
    return path


def require_columns(frame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(frame.columns)})")


def read_parquet(path: Path):
    import pandas as pd

    require_file(path, "parquet file")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a broken file
        raise InvalidInputError(f"cannot read parquet file {path}: {exc}") from exc


def embedded_image_bytes(value: object) -> bytes | None:
    """The bytes of an HF ``Image`` feature cell ({bytes, path}) or of a raw bytes cell."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


def write_import(workspace: Workspace, summary: ImportSummary, samples: list[Sample], kind: str, meta: dict,
                 replace: bool = False) -> None:
    """Store dataset, samples and the import summary in one transaction.

    Raises InvalidInputError if no row survived validation (nothing is written).
    """
    if not samples:
        raise InvalidInputError(f"nothing to import from {summary.path}: every row was skipped\n{summary.text()}")
    summary.imported = len(samples)
    db = workspace.connect()
    try:
        with write_transaction(db):
            existing = get_dataset(db, summary.dataset)
            if existing and existing["kind"] != kind:
                raise InvalidInputError(f"dataset {summary.dataset!r} already exists as a {existing['kind']} "
                                        f"dataset; import this {kind} data under another --name")
            for split in {s.split for s in samples}:
                held = split_size(db, summary.dataset, split)
                if held and not replace:
                    raise InvalidInputError(f"dataset {summary.dataset!r} already has {held:,} samples in split "
                                            f"{split!r}; import under another --name, or pass --replace to "
                                            "replace samples with the same ids")
            upsert_dataset(db, summary.dataset, kind, meta)
            upsert_samples(db, samples)
            record_import(db, summary.dataset, summary.format, summary.path, summary.split, summary.read,
                          summary.imported, summary.skipped,
                          {"reasons": dict(summary.reasons), "examples": summary.examples})
    finally:
        db.close()
