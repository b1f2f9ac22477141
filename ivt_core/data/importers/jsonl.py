"""One sample per line: ``{"image": PATH, "expression": TEXT, "bbox": [4 numbers], "bbox_format": F}``.

``bbox_format`` is required on every line (``xyxy`` or ``xywh`` in pixels, ``norm1000`` or ``norm1`` relative)
so that no box is guessed. Optional: ``id`` (default: the line number), ``split`` (lines of other splits are
skipped). Relative image paths are resolved against ``--images`` or the JSONL file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from ivt_core.boxes import from_model
from ivt_core.data.importers.common import Collector, box_from, require_file
from ivt_core.errors import InvalidInputError

FORMATS = ("xyxy", "xywh", "norm1000", "norm1")


def import_rows(collector: Collector, path: Path, split: str, images: Path | None) -> None:
    require_file(path, "JSONL file")
    base = images or path.parent
    with path.open(encoding="utf-8", errors="replace") as handle:  # bytes that are not UTF-8: a bad line
        for number, line in enumerate(handle, start=1):
            if collector.full:
                return
            if not line.strip():
                continue
            where = f"{path.name}: line {number}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                collector.summary.read += 1
                collector.skip("line is not a JSON object", f"{where}: {exc}")
                continue
            if row.get("split", split) != split:
                continue
            fmt = row.get("bbox_format")
            if fmt not in FORMATS:
                collector.summary.read += 1
                collector.skip(f"bbox_format missing or not one of {', '.join(FORMATS)}", where)
                continue
            image_path = Path(str(row.get("image", "")))
            image = collector.image_file(image_path if image_path.is_absolute() else base / image_path)
            box = None
            if image[1] is not None and fmt in ("xyxy", "xywh"):
                box = box_from(row.get("bbox"), fmt)
            elif image[1] is not None:
                values = box_from(row.get("bbox"), "xyxy")
                top = 1000 if fmt == "norm1000" else 1
                if values is not None and not all(0 <= v <= top for v in values.to_xyxy()):
                    collector.summary.read += 1
                    collector.skip(f"relative box outside 0-{top}", f"{where}: {row.get('bbox')}")
                    continue
                try:
                    box = from_model(values.to_xyxy(), fmt, image[1]) if values is not None else None
                except InvalidInputError:
                    box = None
            collector.add(str(row.get("id", number)), where, row.get("expression"),
                          box, *image, str(row.get("source", "jsonl")), {"line": number})
