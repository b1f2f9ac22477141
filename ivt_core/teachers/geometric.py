"""The geometric teacher: corrective reasoning written from geometry alone (offline, deterministic).

For every edge that is off by more than a small tolerance it says which way it must move and by about how
much ("the left edge should move right by about 12 px"); it says whether the box is too wide, narrow, tall or
short and where the object lies relative to the box. For shapes-world samples it also names what the box
covers and what the expression refers to, from the scene's objects ("The box covers the blue square, but the
small red circle is further right and lower"). Wording is drawn from a few templates by a generator seeded
from (seed, sample, step), so the same inputs always give the same text. The text never says it was given
the answer. ``style="terse"`` writes the same content in a short fixed form ("Box on large green star; target
small red circle. left edge right 7, top edge down 18.") that a small model can learn quickly;
``style="minimal"`` only says what kind of error it is ("Wrong shape." / "Edges off.") and lets the box carry
the correction: the form a tiny model (the shipped toy) learns in a few hundred CPU steps.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection

from ivt_core.boxes import Box, iou
from ivt_core.errors import InvalidInputError
from ivt_core.teachers.base import TeachContext, TeacherOutput

EDGE_TOLERANCE_FRACTION = 0.02
STYLES = ("prose", "terse", "minimal")
KEEP_MINIMAL = "The box is correct."
EDGES_OFF_MINIMAL = "Edges off."
WRONG_PLACE_MINIMAL = "Wrong place."


def _rng(ctx: TeachContext) -> random.Random:
    digest = hashlib.sha256(f"{ctx.seed}:{ctx.sample_id}:{ctx.step}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def edge_moves(current: Box, target: Box, width: int, height: int) -> list[tuple[str, str, float]]:
    """(edge, direction, pixels) for each edge that must move by more than the tolerance."""
    tol_x, tol_y = max(2.0, EDGE_TOLERANCE_FRACTION * width), max(2.0, EDGE_TOLERANCE_FRACTION * height)
    moves = []
    for edge, delta, tol, (neg, pos) in (
        ("left", target.x1 - current.x1, tol_x, ("left", "right")),
        ("right", target.x2 - current.x2, tol_x, ("left", "right")),
        ("top", target.y1 - current.y1, tol_y, ("up", "down")),
        ("bottom", target.y2 - current.y2, tol_y, ("up", "down")),
    ):
        if abs(delta) > tol:
            moves.append((edge, pos if delta > 0 else neg, abs(delta)))
    return moves


def _where(current: Box, target: Box, width: int, height: int) -> str:
    (cx, cy), (tx, ty) = current.center, target.center
    parts = []
    if abs(tx - cx) > max(2.0, 0.03 * width):
        parts.append("further right" if tx > cx else "further left")
    if abs(ty - cy) > max(2.0, 0.03 * height):
        parts.append("lower" if ty > cy else "higher")
    return " and ".join(parts)


def _size(current: Box, target: Box) -> str:
    words = []
    if current.width > 1.15 * target.width:
        words.append("too wide")
    elif current.width < 0.87 * target.width:
        words.append("too narrow")
    if current.height > 1.15 * target.height:
        words.append("too tall")
    elif current.height < 0.87 * target.height:
        words.append("too short")
    return " and ".join(words)


def object_name(obj: dict) -> str:
    return f"{obj['size']} {obj['colour']} {obj['kind']}"


def difference(covered: dict, target: dict) -> str:
    """What tells the boxed object from the one meant: "colour" (the same shape in another colour), "shape",
    "size", several of them joined ("colour and shape"), or "position" (an identical object elsewhere)."""
    differs = [name for name, key in (("colour", "colour"), ("shape", "kind"), ("size", "size"))
               if covered[key] != target[key]]
    return " and ".join(differs) if differs else "position"


def minimal_verdict(covered: dict, target: dict, stated: Collection[str] | None = None) -> str:
    """The minimal style's verdict on a box around ``covered`` when ``target`` is meant: "Wrong shape." when the
    shapes differ, else "Wrong colour.", else "Wrong size.", else "Wrong one." (an identical object elsewhere).
    With ``stated`` (the object keys the expression states, ``shapes.stated_attributes``: "kind", "colour",
    "size") only a difference the expression's words can check is named; any other is "Wrong one." ("the second
    hexagon from the top" on a hexagon of another colour)."""
    differs = difference(covered, target).split(" and ")
    for name, key in (("shape", "kind"), ("colour", "colour"), ("size", "size")):
        if name in differs and (stated is None or key in stated):
            return f"Wrong {name}."
    return "Wrong one."


def _difference_sentence(covered: dict, target: dict) -> str:
    kind = difference(covered, target)
    if kind == "colour":
        return f"Right shape, wrong colour: this {covered['kind']} is {covered['colour']}, the one meant is " \
               f"{target['colour']}."
    if kind == "shape":
        return f"Right colour, wrong shape: this is a {covered['kind']}, the one meant is a {target['kind']}."
    if kind == "size":
        return f"Right shape and colour, wrong size: this {covered['kind']} is {covered['size']}, the one meant " \
               f"is {target['size']}."
    if kind == "position":
        return "An identical shape, in the wrong place: the expression's relation or order picks another one."
    return f"It differs in {kind}: this is the {object_name(covered)}, the one meant is the {object_name(target)}."


def covered_object(box: Box, objects: list[dict]) -> tuple[int | None, float]:
    """(index of the object ``box`` overlaps most, that IoU); the index is None below IoU 0.1 (on nothing)."""
    best, best_iou = None, 0.0
    for index, obj in enumerate(objects):
        overlap = iou(box, Box(*obj["box"]))
        if overlap > best_iou:
            best, best_iou = index, overlap
    return (best, best_iou) if best_iou >= 0.1 else (None, best_iou)


def minimal_verdict_on(box: Box, objects: list[dict], target: int, stated: Collection[str] | None = None) -> str:
    """The minimal style's verdict on a wrong ``box`` when ``objects[target]`` is meant: "Wrong place." on no
    object, ``minimal_verdict`` on another object (``stated`` as there), ``EDGES_OFF_MINIMAL`` on the meant one."""
    covered, _ = covered_object(box, objects)
    if covered is None:
        return WRONG_PLACE_MINIMAL
    if covered != target:
        return minimal_verdict(objects[covered], objects[target], stated)
    return EDGES_OFF_MINIMAL


def _covered(ctx: TeachContext) -> tuple[int | None, float]:
    return covered_object(ctx.current, ctx.objects)


class GeometricTeacher:
    name = "geometric"

    def __init__(self, seed: int = 0, style: str = "prose"):
        if style not in STYLES:
            raise InvalidInputError(f"unknown teacher style {style!r}; use one of {', '.join(STYLES)}")
        self.seed = seed
        self.style = style
        self.name = "geometric" if style == "prose" else f"geometric-{style}"

    def write(self, contexts: list[TeachContext]) -> list[TeacherOutput]:
        write = {"prose": self._one, "terse": self._terse, "minimal": self._minimal}[self.style]
        return [write(ctx) for ctx in contexts]

    def keep_text(self, expression: str, sample_id: str) -> str:
        """Reasoning of a step that keeps the box (keep traces, and the confirming step of a corrective one)."""
        return KEEP_MINIMAL if self.style == "minimal" else keep_reasoning(expression, self.seed, sample_id)

    def _minimal(self, ctx: TeachContext) -> TeacherOutput:
        """The kind of error only: on another shape (or on nothing), or on the right shape with edges off."""
        if ctx.objects and ctx.target_object is not None:
            return TeacherOutput(minimal_verdict_on(ctx.current, ctx.objects, ctx.target_object))
        return TeacherOutput(EDGES_OFF_MINIMAL)

    def _terse(self, ctx: TeachContext) -> TeacherOutput:
        """Short, fixed-form reasoning for small models: what the box is on, then each edge move."""
        width, height = ctx.image.size
        parts = []
        if ctx.objects and ctx.target_object is not None and ctx.step == 1:
            covered, _ = _covered(ctx)
            target_name = object_name(ctx.objects[ctx.target_object])
            if covered is None:
                parts.append(f"Box on background; target {target_name}.")
            elif covered != ctx.target_object:
                kind = difference(ctx.objects[covered], ctx.objects[ctx.target_object])
                parts.append(f"Box on {object_name(ctx.objects[covered])}; target {target_name} (wrong {kind}).")
            else:
                parts.append(f"Box on {target_name}, edges off.")
        moves = edge_moves(ctx.current, ctx.target, width, height)
        if moves:
            parts.append(", ".join(f"{edge} edge {direction} {round(px)}" for edge, direction, px in moves) + ".")
        return TeacherOutput(" ".join(parts) or "Small adjustment.")

    def _one(self, ctx: TeachContext) -> TeacherOutput:
        rng = _rng(ctx)
        width, height = ctx.image.size
        sentences = []
        if ctx.objects and ctx.target_object is not None and ctx.step == 1:
            covered, _ = _covered(ctx)
            target_name = object_name(ctx.objects[ctx.target_object])
            where = _where(ctx.current, Box(*ctx.objects[ctx.target_object]["box"]), width, height)
            if covered is None:
                sentences.append(rng.choice([
                    f"The box does not sit on any shape; {ctx.expression} is the {target_name}"
                    + (f", {where}" if where else "") + ".",
                    f"The box is on empty background. The {target_name} is what \"{ctx.expression}\" means"
                    + (f", and it is {where}" if where else "") + ".",
                ]))
            elif covered != ctx.target_object and object_name(ctx.objects[covered]) == target_name:
                sentences.append(rng.choice([
                    f"The box covers another {target_name}, not {ctx.expression}; the one meant is "
                    + (where if where else "a different one") + ".",
                    f"That is a different {target_name}. {ctx.expression.capitalize()} is "
                    + (f"{where}" if where else "another one") + ".",
                ]))
            elif covered != ctx.target_object:
                sentences.append(_difference_sentence(ctx.objects[covered], ctx.objects[ctx.target_object]))
                sentences.append(rng.choice([
                    f"So the box covers the {object_name(ctx.objects[covered])}, but {ctx.expression} is the "
                    f"{target_name}" + (f", which is {where}" if where else "") + ".",
                    f"The {target_name}" + (f" is {where}" if where else " is the one meant") + ".",
                ]))
            else:
                sentences.append(rng.choice([
                    f"The box is on the {target_name}, but its edges do not fit it.",
                    f"The right shape, the {target_name}, but the box is not tight around it.",
                ]))
        else:
            where = _where(ctx.current, ctx.target, width, height)
            if where:
                sentences.append(rng.choice([f"The object is {where} than the box.",
                                             f"{ctx.expression.capitalize()} lies {where} than the box."]))
        size = _size(ctx.current, ctx.target)
        if size:
            sentences.append(rng.choice([f"The box is {size}.", f"It is {size} for the object."]))
        moves = edge_moves(ctx.current, ctx.target, width, height)
        if moves:
            verb = rng.choice(["should move", "needs to move", "has to go"])
            parts = [f"the {edge} edge {verb} {direction} by about {round(px)} px" for edge, direction, px in moves]
            lead = rng.choice(["So", "Therefore", "To fix it,"])
            sentences.append(f"{lead} " + "; ".join(parts) + ".")
        if not ctx.is_last:
            sentences.append(rng.choice(["Moving part of the way there first.", "A first step in that direction."]))
        else:
            sentences.append(rng.choice([f"Now the box fits {ctx.expression}.", "This box fits the object tightly."]))
        return TeacherOutput(" ".join(sentences))


def keep_reasoning(expression: str, seed: int, sample_id: str) -> str:
    """Text of a keep trace: the box is already right and stays put (with the phrase the self policy reads)."""
    rng = random.Random(f"{seed}:{sample_id}:keep")
    return rng.choice([
        f"The box already fits {expression} closely on every side. The box is correct.",
        f"Checking the edges: the box sits tightly on {expression}. The box is correct.",
    ])
