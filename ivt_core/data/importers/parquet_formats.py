"""The parquet-based formats: lmms-lab RefCOCOg, Ref-L4 and Ref-Adv-s.

- ``refcocog-parquet``: ``question_id``, ``image`` ({bytes, path}), ``answer`` (list of expressions; else
  ``question``), ``bbox`` COCO ``[x, y, w, h]``; one sample per expression.
- ``ref-l4``: ``ref-l4-{val,test}.parquet`` (``id``, ``caption``, ``bbox`` xywh, ``file_name``) with the images
  in a folder (``--images`` or ``images/`` beside) or in ``images.tar.gz`` (members named exactly ``file_name``;
  read as bytes, never extracted to disk by name).
- ``ref-adv-s``: ``image`` embedded, ``normal_caption``, ``solution`` absolute ``[x1, y1, x2, y2]``.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from ivt_core.data.importers.common import (
    Collector,
    box_from,
    embedded_image_bytes,
    read_parquet,
    require_columns,
)
from ivt_core.errors import InvalidInputError, NotFoundError


def _parquet_files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise NotFoundError(f"not found: {path}")
    files = sorted(path.glob(f"**/{split}-*.parquet")) or sorted(path.glob(f"**/*{split}*.parquet"))
    if not files:
        raise NotFoundError(f"no parquet file for split {split!r} under {path} (expected e.g. data/{split}-*.parquet)")
    return files


def _expressions(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        return []


def import_refcocog_parquet(collector: Collector, path: Path, split: str) -> None:
    for file in _parquet_files(path, split):
        frame = read_parquet(file)
        require_columns(frame, ["question_id", "image", "bbox"], file)
        if "answer" not in frame.columns and "question" not in frame.columns:
            raise InvalidInputError(f"{file} has neither an 'answer' nor a 'question' column")
        for row_index, row in enumerate(frame.itertuples(index=False)):
            if collector.full:
                return
            row = row._asdict()
            image = collector.image_bytes(embedded_image_bytes(row["image"]))
            box = box_from(row["bbox"], "xywh")
            texts = _expressions(row.get("answer")) if "answer" in row else [row.get("question")]
            if not texts:
                collector.summary.read += 1
                collector.skip("empty or missing expression", f"{file.name}: row {row_index}")
            for k, text in enumerate(texts):
                collector.add(f"{row['question_id']}-{k}", f"{file.name}: row {row_index}", text, box,
                              *image, "refcocog", {"question_id": str(row["question_id"])})


class _TarImages:
    """Images of a tar.gz by member name, read into memory on demand (never written under their names)."""

    def __init__(self, path: Path):
        try:
            self.tar = tarfile.open(path, "r:gz")
            self.members = {m.name: m for m in self.tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InvalidInputError(f"cannot read image archive {path}: {exc}") from exc

    def read(self, name: str) -> bytes | None:
        member = self.members.get(name)
        if member is None:
            return None
        handle = self.tar.extractfile(member)
        return handle.read() if handle else None


def import_ref_l4(collector: Collector, path: Path, split: str, images: Path | None) -> None:
    if split not in ("val", "test"):
        raise InvalidInputError(f"Ref-L4 has splits val and test, not {split!r}")
    file = path / f"ref-l4-{split}.parquet" if path.is_dir() else path
    frame = read_parquet(file)
    require_columns(frame, ["id", "caption", "bbox", "file_name"], file)
    folder = images or (file.parent / "images")
    archive = None
    if not folder.is_dir():
        tar_path = file.parent / "images.tar.gz"
        if not tar_path.is_file():
            raise NotFoundError(f"Ref-L4 images not found: neither a folder {folder} nor {tar_path} "
                                "(give the folder with --images)")
        archive = _TarImages(tar_path)
    cache: dict[str, tuple] = {}
    for row_index, row in enumerate(frame.itertuples(index=False)):
        if collector.full:
            return
        row = row._asdict()
        name = str(row["file_name"])
        if name not in cache:
            cache[name] = (collector.image_bytes(archive.read(name)) if archive
                           else collector.image_file(folder / name))
        collector.add(str(row["id"]), f"{file.name}: row {row_index} (id {row['id']})", row["caption"],
                      box_from(row["bbox"], "xywh"), *cache[name], "ref-l4",
                      {"id": int(row["id"]), "file_name": name})


def import_ref_adv_s(collector: Collector, path: Path, split: str) -> None:
    files = [path] if path.is_file() else sorted(path.glob("**/*.parquet"))
    if not files:
        raise NotFoundError(f"no parquet file under {path}")
    for file in files:
        frame = read_parquet(file)
        require_columns(frame, ["image", "normal_caption", "solution"], file)
        for row_index, row in enumerate(frame.itertuples(index=False)):
            if collector.full:
                return
            row = row._asdict()
            image = collector.image_bytes(embedded_image_bytes(row["image"]))
            key = row.get("file_name") or row_index
            collector.add(f"{file.stem}-{row_index}", f"{file.name}: row {row_index} ({key})",
                          row["normal_caption"], box_from(row["solution"], "xyxy"), *image, "ref-adv-s",
                          {"file_name": str(row.get("file_name", ""))})
