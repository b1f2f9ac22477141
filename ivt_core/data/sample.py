"""The ``Sample`` type: one image, one referring expression, one ground-truth box (pixel xyxy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ivt_core.boxes import Box
from ivt_core.errors import InvalidInputError, NotFoundError


@dataclass(frozen=True)
class Sample:
    """A grounding sample. ``bbox`` is pixel xyxy in the original image; ``meta`` keeps e.g. a scene's objects."""

    id: str
    dataset: str
    split: str
    image_path: str
    width: int
    height: int
    expression: str
    bbox: Box
    source: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, fully decoded.

    Raises NotFoundError if the file is missing and InvalidInputError if it is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"image not found: {path} (re-import the dataset or restore the file)")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"cannot read image {path}: {exc} (replace or remove the file)") from exc
