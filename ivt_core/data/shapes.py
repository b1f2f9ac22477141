"""The shapes world: procedural scenes of coloured shapes with referring expressions and exact boxes.

Each scene is fully determined by ``(seed, split, index)``: the three are hashed into the seed of a private
random generator, so splits never share scenes and regenerating gives identical images and boxes. Scenes have
several kinds of shape in several colours and two sizes, partial overlaps, and plain or textured backgrounds.
Expressions need attributes ("the small red circle"), relations ("the blue square left of the green star") or
order ("the second triangle from the top"); every expression picks out exactly one object. The scene's objects
are kept with each sample (``meta``) for the geometric teacher.

Usage: ``generate(ShapesConfig(), seed=0, split="test", n=200)`` -> list of ``ShapeSample`` (image + fields).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ivt_core.boxes import Box, iou
from ivt_core.errors import InvalidInputError

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
KINDS = ("circle", "square", "triangle", "star", "diamond", "hexagon")
SIZES = ("small", "large")
SPLITS = ("train", "val", "test")
RELATIONS = {"left of": ("x", -1), "right of": ("x", 1), "above": ("y", -1), "below": ("y", 1)}
ORDER_AXES = {"top": ("y", 1), "bottom": ("y", -1), "left": ("x", 1), "right": ("x", -1)}
ORDINALS = ("first", "second", "third", "fourth")


@dataclass(frozen=True)
class ShapesConfig:
    """Difficulty knobs of the world. Change ``version`` when a change alters generated scenes."""

    image_size: int = 224
    min_objects: int = 3
    max_objects: int = 6
    small_radius: tuple[int, int] = (10, 16)
    large_radius: tuple[int, int] = (22, 34)
    max_overlap_iou: float = 0.2
    duplicate_prob: float = 0.35
    twin_same_colour_prob: float = 0.6  # a duplicated kind keeps its twin's colour this often (else any colour)
    texture_prob: float = 0.6
    expression_weights: tuple[float, float, float] = (0.4, 0.35, 0.25)  # attribute, relation, ordinal
    # near misses (0 = off, as in shapes-v1): shapes small enough to fall inside one or two vision patches, and
    # shapes partly hidden behind later ones (their box is then the visible part's, as annotators draw it)
    tiny_prob: float = 0.0
    tiny_radius: tuple[int, int] = (6, 9)
    occlusion_prob: float = 0.0
    occlusion_max_iou: float = 0.5
    min_visible: float = 0.55
    version: str = "shapes-v1"

    def check(self) -> ShapesConfig:
        """Return self if consistent. Raises InvalidInputError saying which knob to fix."""
        if self.image_size < 64:
            raise InvalidInputError(f"image_size {self.image_size} is too small; use at least 64")
        if not 1 <= self.min_objects <= self.max_objects <= 12:
            raise InvalidInputError("need 1 <= min_objects <= max_objects <= 12")
        if self.large_radius[1] * 4 > self.image_size:
            raise InvalidInputError("large_radius is too big for image_size; shapes would not fit")
        for name in ("tiny_prob", "occlusion_prob", "min_visible", "max_overlap_iou", "occlusion_max_iou",
                     "duplicate_prob", "twin_same_colour_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInputError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if not 2 <= self.tiny_radius[0] <= self.tiny_radius[1]:
            raise InvalidInputError("tiny_radius must be (low, high) with 2 <= low <= high")
        return self


# Named worlds, for `ivt data shapes --world` and the toy's training config. shapes-v1: every object fully
# visible at two sizes (the base toy's errors are almost all the wrong object). shapes-v2 adds near misses:
# tiny shapes and partial occlusion, so a model also makes localisation errors (loose edges) to refine.
WORLDS = {
    "shapes-v1": ShapesConfig(),
    "shapes-v2": ShapesConfig(tiny_prob=0.25, occlusion_prob=0.5, version="shapes-v2"),
}


def named_world(name: str) -> ShapesConfig:
    """The world called ``name``. Raises InvalidInputError naming the known ones."""
    if name not in WORLDS:
        raise InvalidInputError(f"unknown shapes world {name!r}; use one of {', '.join(WORLDS)}")
    return WORLDS[name]


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float
    rotation: float

    def polygon(self) -> list[tuple[float, float]]:
        """Vertices of the shape (circles approximated finely; the box of a circle is exact anyway)."""
        if self.kind == "circle":
            n, radii, start = 64, [self.r], 0.0
        elif self.kind == "square":
            n, radii, start = 4, [self.r], math.pi / 4 + self.rotation
        elif self.kind == "diamond":
            n, radii, start = 4, [self.r], self.rotation
        elif self.kind == "triangle":
            n, radii, start = 3, [self.r], -math.pi / 2 + self.rotation
        elif self.kind == "hexagon":
            n, radii, start = 6, [self.r], self.rotation
        else:  # star
            n, radii, start = 10, [self.r, self.r * 0.45], -math.pi / 2 + self.rotation
        return [
            (self.cx + radii[i % len(radii)] * math.cos(start + 2 * math.pi * i / n),
             self.cy + radii[i % len(radii)] * math.sin(start + 2 * math.pi * i / n))
            for i in range(n)
        ]

    def box(self) -> Box:
        if self.kind == "circle":
            return Box(self.cx - self.r, self.cy - self.r, self.cx + self.r, self.cy + self.r)
        xs, ys = zip(*self.polygon(), strict=True)
        return Box(min(xs), min(ys), max(xs), max(ys))

    def name(self, with_size: bool = False, with_colour: bool = True) -> str:
        words = ([self.size] if with_size else []) + ([self.colour] if with_colour else []) + [self.kind]
        return " ".join(words)


@dataclass
class ShapeSample:
    """One generated sample: the image, the expression, the target box and the scene for the teacher."""

    id: str
    split: str
    image: Image.Image
    expression: str
    bbox: Box
    meta: dict = field(default_factory=dict)


def _rng(seed: int, split: str, index: int, config: ShapesConfig) -> random.Random:
    digest = hashlib.sha256(f"{config.version}:{seed}:{split}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _place_shapes(rng: random.Random, config: ShapesConfig) -> list[Shape]:
    count = rng.randint(config.min_objects, config.max_objects)
    shapes: list[Shape] = []
    for _ in range(200):
        if len(shapes) == count:
            break
        if shapes and rng.random() < config.duplicate_prob:
            twin = rng.choice(shapes)
            kind, colour = twin.kind, (twin.colour if rng.random() < config.twin_same_colour_prob
                                       else rng.choice(list(COLOURS)))
        else:
            kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
        size = rng.choice(SIZES)
        lo, hi = config.small_radius if size == "small" else config.large_radius
        if size == "small" and config.tiny_prob and rng.random() < config.tiny_prob:
            lo, hi = config.tiny_radius
        r = rng.uniform(lo, hi)
        margin = r + 2
        cx = rng.uniform(margin, config.image_size - margin)
        cy = rng.uniform(margin, config.image_size - margin)
        shape = Shape(kind, colour, size, cx, cy, r, rng.uniform(-0.3, 0.3))
        box = shape.box()
        limit = config.max_overlap_iou
        if config.occlusion_prob and rng.random() < config.occlusion_prob:
            limit = config.occlusion_max_iou
        if any(iou(box, other.box()) > limit or _center_inside(shape, other) for other in shapes):
            continue
        if limit > config.max_overlap_iou and min(visible_fractions([*shapes, shape], config.image_size)) < \
                config.min_visible:
            continue  # it would hide too much of an earlier shape (or the shape's own label would not fit)
        shapes.append(shape)
    return shapes


def _label_map(shapes: list[Shape], image_size: int) -> np.ndarray:
    """Which shape (1-based, 0 = background) each pixel shows, drawn in the scene's order (later on top)."""
    labels = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(labels)
    for i, shape in enumerate(shapes, start=1):
        _draw_shape(draw, shape, i, i)
    return np.asarray(labels)


def _area(shape: Shape, image_size: int) -> int:
    alone = Image.new("L", (image_size, image_size), 0)
    _draw_shape(ImageDraw.Draw(alone), shape, 1, 1)
    return int(np.count_nonzero(np.asarray(alone)))


def visible_fractions(shapes: list[Shape], image_size: int) -> list[float]:
    """The share of each shape's pixels not covered by a later shape."""
    labels = _label_map(shapes, image_size)
    return [int(np.count_nonzero(labels == i)) / max(1, _area(s, image_size)) for i, s in enumerate(shapes, 1)]


def visible_box(shapes: list[Shape], index: int, image_size: int) -> Box:
    """The box of the pixels of shape ``index`` that the scene shows (its whole box when nothing covers it)."""
    shape = shapes[index]
    if not any(iou(shape.box(), other.box()) > 0 for other in shapes[index + 1:]):
        return shape.box()
    ys, xs = np.nonzero(_label_map(shapes, image_size) == index + 1)
    if len(xs) == 0:  # pragma: no cover - placement keeps min_visible of every shape
        return shape.box()
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _center_inside(a: Shape, b: Shape) -> bool:
    ba, bb = a.box(), b.box()
    return (bb.x1 <= a.cx <= bb.x2 and bb.y1 <= a.cy <= bb.y2) or (ba.x1 <= b.cx <= ba.x2 and ba.y1 <= b.cy <= ba.y2)


def _background(rng: random.Random, config: ShapesConfig) -> tuple[Image.Image, str]:
    size = config.image_size
    base = np.array([rng.randint(150, 235) for _ in range(3)], dtype=np.float32)
    np_rng = np.random.default_rng(rng.getrandbits(32))
    kind = rng.choice(("noise", "stripes", "checker", "gradient")) if rng.random() < config.texture_prob else "plain"
    pixels = np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "noise":
        pixels += np_rng.normal(0, 12, (size, size, 1))
    elif kind == "stripes":
        period = rng.randint(8, 24)
        angle = rng.uniform(0, math.pi)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) // period % 2
        pixels += (phase[..., None] * 2 - 1) * 10
    elif kind == "checker":
        period = rng.randint(10, 28)
        phase = ((xx // period) + (yy // period)) % 2
        pixels += (phase[..., None] * 2 - 1) * 9
    elif kind == "gradient":
        pixels += ((xx + yy) / (2 * size) - 0.5)[..., None] * 50
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), kind


def draw_scene(shapes: list[Shape], background: Image.Image) -> Image.Image:
    image = background.copy()
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        colour = COLOURS[shape.colour]
        _draw_shape(draw, shape, colour, tuple(max(0, c - 60) for c in colour))
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, fill, outline) -> None:
    if shape.kind == "circle":
        b = shape.box()
        draw.ellipse([b.x1, b.y1, b.x2, b.y2], fill=fill, outline=outline)
    else:
        draw.polygon(shape.polygon(), fill=fill, outline=outline)


def _matches(shapes: list[Shape], kind: str, colour: str | None = None, size: str | None = None) -> list[int]:
    return [i for i, s in enumerate(shapes)
            if s.kind == kind and (colour is None or s.colour == colour) and (size is None or s.size == size)]


def stated_attributes(expression: str) -> dict[str, str]:
    """The size, colour and shape (keys ``size``, ``colour``, ``kind``, as an object's) an expression of this world
    states for the object it asks for: its words up to the first shape word ("the second triangle from the top" ->
    kind triangle; "the red circle left of the blue star" -> colour red, kind circle). What a verdict on a box, or
    a name of what the box is on, can be checked against without grounding again."""
    stated = {}
    for word in expression.lower().replace(",", " ").split():
        if word in SIZES:
            stated["size"] = word
        elif word in COLOURS:
            stated["colour"] = word
        elif word.rstrip("s") in KINDS or word in KINDS:
            stated["kind"] = word if word in KINDS else word.rstrip("s")
            break
    return stated


def _attribute_expression(shapes: list[Shape], target: int, rng: random.Random) -> str | None:
    """Shortest unique description by kind, colour and size (sometimes one attribute more than needed)."""
    t = shapes[target]
    options = [
        (_matches(shapes, t.kind), f"the {t.kind}"),
        (_matches(shapes, t.kind, t.colour), f"the {t.colour} {t.kind}"),
        (_matches(shapes, t.kind, None, t.size), f"the {t.size} {t.kind}"),
        (_matches(shapes, t.kind, t.colour, t.size), f"the {t.size} {t.colour} {t.kind}"),
    ]
    unique = [text for found, text in options if found == [target]]
    if not unique:
        return None
    return unique[1] if len(unique) > 1 and rng.random() < 0.3 else unique[0]


def _unique_name(shapes: list[Shape], index: int) -> str | None:
    s = shapes[index]
    if _matches(shapes, s.kind, s.colour) == [index]:
        return f"the {s.colour} {s.kind}"
    if _matches(shapes, s.kind, s.colour, s.size) == [index]:
        return f"the {s.size} {s.colour} {s.kind}"
    return None


def _relation_holds(s: Shape, anchor: Shape, axis: str, sign: int) -> bool:
    """True if ``s`` is clearly on the ``sign`` side of ``anchor`` along ``axis`` (a margin avoids near ties)."""
    delta = (s.cx - anchor.cx) if axis == "x" else (s.cy - anchor.cy)
    return delta * sign > 0.5 * anchor.r + 6


def _relation_expression(shapes: list[Shape], target: int, rng: random.Random) -> str | None:
    """"the X <relation> the Y" where X alone is ambiguous and the relation makes it unique."""
    t = shapes[target]
    same = _matches(shapes, t.kind, t.colour)
    if len(same) < 2:
        return None
    anchors = [i for i in range(len(shapes)) if i not in same and _unique_name(shapes, i)]
    rng.shuffle(anchors)
    relations = list(RELATIONS.items())
    rng.shuffle(relations)
    for anchor in anchors:
        a = shapes[anchor]
        for words, (axis, sign) in relations:
            satisfied = [i for i in same if _relation_holds(shapes[i], a, axis, sign)]
            if satisfied == [target]:
                return f"the {t.colour} {t.kind} {words} {_unique_name(shapes, anchor)}"
    return None


def _ordinal_expression(shapes: list[Shape], target: int, rng: random.Random) -> str | None:
    """"the second triangle from the top": needs >= 2 of the kind, ordered with clear gaps."""
    kind = shapes[target].kind
    same = _matches(shapes, kind)
    if len(same) < 2:
        return None
    axes = list(ORDER_AXES.items())
    rng.shuffle(axes)
    for side, (axis, sign) in axes:
        coord = {i: (shapes[i].cx if axis == "x" else shapes[i].cy) * sign for i in same}
        order = sorted(same, key=coord.__getitem__)
        gaps = [abs(coord[b] - coord[a]) for a, b in zip(order, order[1:], strict=False)]
        position = order.index(target)
        if min(gaps) >= 10 and position < len(ORDINALS):
            return f"the {ORDINALS[position]} {kind} from the {side}"
    return None


def _expression(shapes: list[Shape], rng: random.Random, config: ShapesConfig) -> tuple[int, str, str] | None:
    makers = {"attribute": _attribute_expression, "relation": _relation_expression, "ordinal": _ordinal_expression}
    first = rng.choices(list(makers), weights=config.expression_weights)[0]
    order = [first] + [k for k in makers if k != first]
    targets = list(range(len(shapes)))
    for kind in order:
        rng.shuffle(targets)
        for target in targets:
            text = makers[kind](shapes, target, rng)
            if text:
                return target, text, kind
    return None


def _target_box(shapes: list[Shape], index: int, config: ShapesConfig) -> Box:
    box = visible_box(shapes, index, config.image_size) if config.occlusion_prob else shapes[index].box()
    return box.clip(config.image_size, config.image_size)


def make_sample(config: ShapesConfig, seed: int, split: str, index: int) -> ShapeSample:
    """Generate sample ``index`` of ``split`` for ``seed``; identical on every call."""
    rng = _rng(seed, split, index, config)
    for _ in range(50):
        shapes = _place_shapes(rng, config)
        found = _expression(shapes, rng, config) if shapes else None
        if found:
            break
    else:  # pragma: no cover - the world always yields an attribute expression in practice
        raise RuntimeError("could not generate a scene; loosen the ShapesConfig")
    target, text, expression_type = found
    background, texture = _background(rng, config)
    image = draw_scene(shapes, background)
    box = _target_box(shapes, target, config)
    meta = {
        "world": config.version,
        "seed": seed,
        "index": index,
        "target": target,
        "expression_type": expression_type,
        "background": texture,
        "objects": [{**asdict(s), "box": _target_box(shapes, i, config).rounded(2).to_xyxy()}
                    for i, s in enumerate(shapes)],
    }
    return ShapeSample(f"shapes-s{seed}-{split}-{index:06d}", split, image, text, box, meta)


def other_questions(sample: ShapeSample, rng: random.Random, n: int) -> list[tuple[str, Box]]:
    """Up to ``n`` more referring expressions about other objects of ``sample``'s scene, with their boxes (for
    multi-turn conversations about one scene: the toy's pretraining, never the loop's refinement)."""
    shapes = [Shape(**{k: v for k, v in o.items() if k != "box"}) for o in sample.meta["objects"]]
    makers = (_attribute_expression, _relation_expression, _ordinal_expression)
    targets = [i for i in range(len(shapes)) if i != sample.meta["target"]]
    rng.shuffle(targets)
    out = []
    for target in targets:
        for maker in rng.sample(makers, len(makers)):
            text = maker(shapes, target, rng)
            if text:
                out.append((text, Box(*sample.meta["objects"][target]["box"])))
                break
        if len(out) == n:
            break
    return out


def generate(config: ShapesConfig, seed: int, split: str, n: int, start: int = 0):
    """Yield ``n`` samples of ``split`` (indices ``start`` .. ``start + n - 1``).

    Raises InvalidInputError for an unknown split or a negative count.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if n < 0:
        raise InvalidInputError(f"--n must be 0 or more, got {n}")
    config.check()
    for index in range(start, start + n):
        yield make_sample(config, seed, split, index)
