"""Boxes, IoU and every coordinate conversion.

The stored form of a box is pixel ``xyxy`` floats in the *original* image. Model families answer in other
conventions; this module is the only place that converts between them:

- ``norm1000``: 0-1000 relative to the image (Qwen3-VL, Qwen2-VL);
- ``abs_resized``: absolute pixels of the image *as resized by the processor* (Qwen2.5-VL; sides are
  multiples of 28), rescaled here to the original size;
- ``norm1``: 0-1 relative;
- ``abs``: absolute pixels of the original image.

Rewards, metrics and the UI all call ``iou`` from here, so there is one definition of overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ivt_core.errors import InvalidInputError

CONVENTIONS = ("norm1000", "abs_resized", "norm1", "abs")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel ``xyxy`` (x1 <= x2, y1 <= y2 once normalised)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_xyxy(cls, coords: Sequence[float]) -> Box:
        """Build from ``[x1, y1, x2, y2]``; corners given in the wrong order are swapped.

        Raises InvalidInputError if there are not four finite numbers.
        """
        values = _four_finite(coords)
        x1, y1, x2, y2 = values
        return cls(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))

    @classmethod
    def from_xywh(cls, coords: Sequence[float]) -> Box:
        """Build from COCO ``[x, y, width, height]``. Raises InvalidInputError on negative sizes."""
        x, y, w, h = _four_finite(coords)
        if w < 0 or h < 0:
            raise InvalidInputError(f"COCO box {list(coords)} has a negative width or height")
        return cls(x, y, x + w, y + h)

    def to_xyxy(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def to_xywh(self) -> list[float]:
        return [self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1]

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def is_empty(self) -> bool:
        """True for a degenerate box (zero width or height)."""
        return self.area <= 0.0

    def clip(self, width: float, height: float) -> Box:
        """The part of the box inside a ``width`` x ``height`` image (may become empty)."""
        return Box(
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
            min(max(self.x2, 0.0), width),
            min(max(self.y2, 0.0), height),
        )

    def inside(self, width: float, height: float, tolerance: float = 0.5) -> bool:
        """True if the box lies within the image, allowing ``tolerance`` pixels of rounding."""
        return (
            self.x1 >= -tolerance
            and self.y1 >= -tolerance
            and self.x2 <= width + tolerance
            and self.y2 <= height + tolerance
        )

    def rounded(self, ndigits: int = 1) -> Box:
        return Box(*(round(v, ndigits) for v in self.to_xyxy()))


def _four_finite(coords: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in coords)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"a box needs four numbers, got {coords!r}") from exc
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"a box needs four finite numbers, got {list(coords)!r}")
    return values  # type: ignore[return-value]


def iou(a: Box | None, b: Box | None) -> float:
    """Intersection over union; 0.0 when either box is missing or both are empty."""
    if a is None or b is None:
        return 0.0
    ix = min(a.x2, b.x2) - max(a.x1, b.x1)
    iy = min(a.y2, b.y2) - max(a.y1, b.y1)
    inter = max(0.0, ix) * max(0.0, iy)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def interpolate(start: Box, end: Box, fraction: float) -> Box:
    """The box ``fraction`` of the way from ``start`` to ``end`` (0 -> start, 1 -> end), corner by corner."""
    f = min(max(fraction, 0.0), 1.0)
    return Box(*(s + (e - s) * f for s, e in zip(start.to_xyxy(), end.to_xyxy(), strict=True)))


def check_convention(convention: str) -> str:
    """Return ``convention`` if known, else raise InvalidInputError listing the known ones."""
    if convention not in CONVENTIONS:
        raise InvalidInputError(
            f"unknown coordinate convention {convention!r}; use one of {', '.join(CONVENTIONS)}"
        )
    return convention


def _scale(convention: str, image_size: tuple[int, int], resized_size: tuple[int, int] | None):
    """Per-axis factors that turn model units into original-image pixels."""
    width, height = image_size
    if convention == "norm1000":
        return width / 1000.0, height / 1000.0
    if convention == "norm1":
        return float(width), float(height)
    if convention == "abs":
        return 1.0, 1.0
    if convention == "abs_resized":
        if resized_size is None:
            raise InvalidInputError("the abs_resized convention needs the processor's resized image size")
        rw, rh = resized_size
        return width / rw, height / rh
    raise InvalidInputError(f"unknown coordinate convention {convention!r}; use one of {', '.join(CONVENTIONS)}")


def from_model(
    coords: Sequence[float],
    convention: str,
    image_size: tuple[int, int],
    resized_size: tuple[int, int] | None = None,
) -> Box:
    """Convert a model's four numbers to a pixel box in the original image, swapped into order and clipped.

    Raises InvalidInputError for an unknown convention or coordinates that are not four finite numbers.
    """
    sx, sy = _scale(convention, image_size, resized_size)
    x1, y1, x2, y2 = _four_finite(coords)
    box = Box.from_xyxy([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
    return box.clip(*image_size)


def to_model(
    box: Box,
    convention: str,
    image_size: tuple[int, int],
    resized_size: tuple[int, int] | None = None,
) -> list[int] | list[float]:
    """Express a pixel box in a model's convention (integers, except ``norm1`` which keeps 3 decimals)."""
    sx, sy = _scale(convention, image_size, resized_size)
    values = [box.x1 / sx, box.y1 / sy, box.x2 / sx, box.y2 / sy]
    if convention == "norm1":
        return [round(v, 3) for v in values]
    return [int(round(v)) for v in values]
