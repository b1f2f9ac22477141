"""RefCOCOg in the refer layout: ``refs(umd).p`` + ``instances.json`` + a COCO train2014 image folder.

One sample per referring expression (a ref with two sentences gives two samples with the same box); the box is
the COCO annotation's ``[x, y, w, h]`` looked up by ``ann_id``; the image is found through ``instances.json``'s
``images`` (by ``image_id``), not through the ref's suffixed ``file_name``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ivt_core.data.importers.common import Collector, box_from, require_file
from ivt_core.data.importers.safe_pickle import load_plain_pickle
from ivt_core.errors import InvalidInputError


def _find(path: Path, name: str) -> Path:
    for candidate in (path / name, path / "refcocog" / name):
        if candidate.is_file():
            return candidate
    return require_file(path / name, f"{name} (RefCOCOg refer layout)")


def import_rows(collector: Collector, path: Path, split: str, images: Path | None) -> None:
    refs_path = _find(path, "refs(umd).p")
    instances_path = _find(path, "instances.json")
    refs = load_plain_pickle(refs_path)
    if not isinstance(refs, list):
        raise InvalidInputError(f"{refs_path} holds a {type(refs).__name__}, not a list of refs")
    try:
        instances = json.loads(instances_path.read_text())
        annotations = {a["id"]: a for a in instances["annotations"]}
        image_rows = {i["id"]: i for i in instances["images"]}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{instances_path} is not a COCO instances file ({exc})") from exc
    image_dir = images or refs_path.parent.parent / "images" / "mscoco" / "images" / "train2014"
    if not image_dir.is_dir():
        raise InvalidInputError(f"image folder not found: {image_dir} (give the COCO train2014 folder with --images)")
    sizes: dict[int, tuple] = {}
    for index, ref in enumerate(refs):
        if collector.full:
            break
        where = f"{refs_path.name}: ref #{index}"
        if not isinstance(ref, dict) or not isinstance(ref.get("sentences"), list):
            collector.summary.read += 1
            collector.skip("malformed ref (no sentences list)", where)
            continue
        if split not in str(ref.get("split", "")):
            continue
        annotation = annotations.get(ref.get("ann_id"))
        box = box_from(annotation.get("bbox"), "xywh") if annotation else None
        image_row = image_rows.get(ref.get("image_id"))
        if image_row is None:
            image = (None, None)
        else:
            key = image_row["id"]
            if key not in sizes:
                sizes[key] = collector.image_file(image_dir / image_row["file_name"])
            image = sizes[key]
        for k, sentence in enumerate(ref["sentences"]):
            text = sentence.get("sent") if isinstance(sentence, dict) else None
            sent_id = sentence.get("sent_id", k) if isinstance(sentence, dict) else k
            collector.add(f"{ref.get('ref_id')}-{sent_id}", f"{where} (ref_id {ref.get('ref_id')}) "
                          f"sentence {k}", text, box, image[0], image[1], "refcocog",
                          {"ref_id": ref.get("ref_id"), "ann_id": ref.get("ann_id"), "image_id": ref.get("image_id")})
