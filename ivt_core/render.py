"""Drawing a step's box on the image: what the model sees between steps, and what the UI shows.

Pure functions over PIL images: same inputs, same pixels. The default is the paper's style: the latest box as
a 3 px red outline with a 25 % red fill, drawn on the original image before the processor resizes it. The
``outline`` style (``RENDER_STYLES``) draws the outline alone in a colour outside the shapes world's palette:
a fill recolours the boxed shape (blue looks purple), and colour is what the toy confuses.
Options (history of older boxes, fading and numbered; ground truth in green; a label) exist for people; the
loop never shows ground truth to a model. The style is recorded with every run (``RenderStyle.to_dict``).

Labels use Pillow's bundled default font so that a render is identical on every machine without shipping or
finding a font file.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw, ImageFont

from ivt_core.boxes import Box

RENDER_VERSION = "render-v1"


@dataclass(frozen=True)
class RenderStyle:
    """How a box is drawn. ``version`` changes whenever the drawing code changes what a model would see."""

    color: tuple[int, int, int] = (255, 0, 0)
    outline_px: int = 3
    fill_alpha: float = 0.25
    history: bool = False
    ground_truth: bool = False
    label: str | None = None
    version: str = RENDER_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RenderStyle:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "color" in known:
            known["color"] = tuple(known["color"])
        return cls(**known)


GT_COLOR = (0, 200, 0)
# a colour outside the shapes world's palette (ivt_core.data.shapes.COLOURS), so the box never looks like a shape
OUTLINE_COLOR = (0, 220, 220)
RENDER_STYLES = {
    "paper": RenderStyle(),  # the paper's: red outline and a 25 % red fill (which recolours the boxed shape)
    "outline": RenderStyle(color=OUTLINE_COLOR, fill_alpha=0.0),  # outline only: the evidence inside is unchanged
}


def render_style(name: str, dataset_kind: str = "") -> RenderStyle:
    """The style called ``name`` ("paper", "outline"; "auto": outline for shapes-world datasets, where colour
    is the attribute models confuse, else the paper's). Raises KeyError for another name."""
    if name == "auto":
        name = "outline" if dataset_kind == "shapes" else "paper"
    return RENDER_STYLES[name]


def describe(style: dict) -> str:
    """A stored style in words, for reports: "outline rgb(0, 220, 220) 3 px, no fill"."""
    color = tuple(style.get("color", (255, 0, 0)))
    fill = style.get("fill_alpha", 0.25)
    return f"outline rgb{color} {style.get('outline_px', 3)} px, " + (f"{fill:.0%} fill" if fill else "no fill")


def _box_xy(box: Box) -> list[int]:
    return [box.x1, box.y1, max(box.x1, box.x2 - 1), max(box.y1, box.y2 - 1)]


def _draw_box(overlay: ImageDraw.ImageDraw, box: Box, color, alpha: float, outline_px: int, fill_alpha: float):
    a_line = int(round(255 * alpha))
    a_fill = int(round(255 * alpha * fill_alpha))
    overlay.rectangle(_box_xy(box), fill=(*color, a_fill), outline=(*color, a_line), width=outline_px)


@functools.lru_cache(maxsize=16)
def _font(size: int):
    return ImageFont.load_default(size=size)


def render_box(
    image: Image.Image,
    box: Box | None,
    style: RenderStyle = RenderStyle(),
    history: Sequence[Box | None] = (),
    ground_truth: Box | None = None,
) -> Image.Image:
    """Return a new RGB image with ``box`` drawn on ``image`` in ``style``.

    ``history`` lists earlier boxes, oldest first; they are drawn fading and numbered only when
    ``style.history`` is on. ``ground_truth`` is drawn in green only when ``style.ground_truth`` is on.
    ``box`` may be None (an unparsable step): the image is returned with only the optional layers.
    """
    with_truth = style.ground_truth and ground_truth is not None
    if box is None and not (with_truth or style.history and any(b is not None for b in history)):
        # nothing to draw (an unparsable step): a copy, as compositing nothing gives; the whole-image composite
        return image.convert("RGB")  # cost ~2.5 ms (2-core CPU), twice a sample at T=2
    if box is not None and not (style.history or style.label or with_truth):
        if not style.fill_alpha:  # an opaque outline alone (the loop's usual case): drawn straight on a copy
            drawn = image.convert("RGB")  # a copy, always; the outline drawn on it gives the overlay's pixels
            ImageDraw.Draw(drawn).rectangle(_box_xy(box), outline=tuple(style.color), width=style.outline_px)
            return drawn
        return _filled_box(image, box, style)
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = _font(max(10, min(base.size) // 20))
    if style.history:
        older = [b for b in history if b is not None]
        for index, old in enumerate(older):
            alpha = 0.25 + 0.5 * (index + 1) / (len(older) + 1)
            _draw_box(draw, old, style.color, alpha, max(1, style.outline_px - 1), 0.0)
            draw.text((old.x1 + 2, old.y1 + 1), str(index), fill=(*style.color, int(255 * alpha)), font=font)
    if style.ground_truth and ground_truth is not None:
        _draw_box(draw, ground_truth, GT_COLOR, 1.0, style.outline_px, 0.0)
    if box is not None:
        _draw_box(draw, box, style.color, 1.0, style.outline_px, style.fill_alpha)
        if style.label:
            draw.text((box.x1 + 2, max(0, box.y1 - font.size - 2)), style.label, fill=(*style.color, 255), font=font)
    return Image.alpha_composite(base, overlay).convert("RGB")


def _filled_box(image: Image.Image, box: Box, style: RenderStyle) -> Image.Image:
    """One box with a translucent fill (the paper's style): blended within the box's own rectangle only. Alpha
    compositing is per pixel and the overlay is transparent outside the rectangle, so the pixels are those of
    compositing the whole image (tested), at the cost of the box's area instead of the image's: a 160x140 box on
    a 640x480 image 4.6 -> 0.4 ms on a 2-core CPU (``benchmarks/render_speed.py``); the loop renders twice per
    sample at T=2."""
    corners = _box_xy(box)
    xs, ys = corners[0::2], corners[1::2]
    # an integer rectangle around the box, an outline's width wider each side (a box thinner than its outline is
    # drawn beyond its coordinates), within the image; the box is moved by whole pixels into it, so the drawing
    # rounds its coordinates as it would on the whole image
    margin = style.outline_px + 1
    x1, y1 = max(0, math.floor(min(xs)) - margin), max(0, math.floor(min(ys)) - margin)
    x2, y2 = min(image.width, math.ceil(max(xs)) + margin + 1), min(image.height, math.ceil(max(ys)) + margin + 1)
    if x2 <= x1 or y2 <= y1:  # nothing of the box inside the image
        return image.convert("RGB")  # a copy, always
    if (x2 - x1) * (y2 - y1) > image.width * image.height // 2:  # most of the image: cropping saves nothing
        return Image.alpha_composite(image.convert("RGBA"), _overlay(image.size, box, style)).convert("RGB")
    drawn = image.convert("RGB")  # a copy, always
    overlay = _overlay((x2 - x1, y2 - y1), Box(box.x1 - x1, box.y1 - y1, box.x2 - x1, box.y2 - y1), style)
    region = (x1, y1, x2, y2)
    drawn.paste(Image.alpha_composite(drawn.crop(region).convert("RGBA"), overlay).convert("RGB"), region[:2])
    return drawn


def _overlay(size: tuple[int, int], box: Box, style: RenderStyle) -> Image.Image:
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    _draw_box(ImageDraw.Draw(overlay), box, style.color, 1.0, style.outline_px, style.fill_alpha)
    return overlay
