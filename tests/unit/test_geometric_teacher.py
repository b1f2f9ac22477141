import re

import pytest
from PIL import Image

from ivt_core.boxes import Box
from ivt_core.teachers.base import FORBIDDEN_PHRASES, TeachContext
from ivt_core.teachers.geometric import GeometricTeacher, edge_moves

IMG = Image.new("RGB", (200, 200))


def _ctx(current, target, step=1, total=1, objects=(), target_object=None, sample_id="s"):
    return TeachContext(sample_id, "the red circle", IMG, current, target, step, total, list(objects), target_object)


def _directions(text):
    return dict(re.findall(r"(?:the )?(left|right|top|bottom) edge [a-z ]*?\b(left|right|up|down)\b", text))


@pytest.mark.parametrize("current,target,expected", [
    (Box(10, 10, 50, 50), Box(60, 10, 100, 50), {"left": "right", "right": "right"}),
    (Box(60, 60, 100, 100), Box(20, 20, 60, 60), {"left": "left", "right": "left", "top": "up", "bottom": "up"}),
    (Box(50, 50, 150, 150), Box(70, 70, 130, 130), {"left": "right", "right": "left", "top": "down",
                                                    "bottom": "up"}),
    (Box(90, 90, 110, 110), Box(50, 50, 150, 150), {"left": "left", "right": "right", "top": "up",
                                                    "bottom": "down"}),
    (Box(10, 10, 50, 50), Box(10, 10, 50, 120), {"bottom": "down"}),
])
def test_every_edge_direction_is_right(current, target, expected):
    (out,) = GeometricTeacher().write([_ctx(current, target)])
    assert _directions(out.reasoning) == expected


def test_size_and_position_words():
    (out,) = GeometricTeacher().write([_ctx(Box(50, 50, 150, 150), Box(160, 160, 180, 180))])
    assert "too wide" in out.reasoning and "too tall" in out.reasoning
    assert "further right and lower" in out.reasoning


def test_names_what_the_box_covers_in_a_scene():
    objects = [{"kind": "square", "colour": "blue", "size": "large", "box": [10, 10, 50, 50]},
               {"kind": "circle", "colour": "red", "size": "small", "box": [150, 150, 170, 170]}]
    (out,) = GeometricTeacher().write([_ctx(Box(10, 10, 50, 50), Box(150, 150, 170, 170), objects=objects,
                                            target_object=1)])
    assert "large blue square" in out.reasoning and "small red circle" in out.reasoning
    assert "further right and lower" in out.reasoning


def test_deterministic_varied_and_never_mentions_the_answer():
    teacher = GeometricTeacher(seed=1)
    texts = [teacher.write([_ctx(Box(10, 10, 50, 50), Box(60, 70, 90, 120), sample_id=f"s{i}")])[0].reasoning
             for i in range(12)]
    again = [teacher.write([_ctx(Box(10, 10, 50, 50), Box(60, 70, 90, 120), sample_id=f"s{i}")])[0].reasoning
             for i in range(12)]
    assert texts == again and len(set(texts)) > 1
    assert not any(p in t.lower() for t in texts for p in FORBIDDEN_PHRASES)


def test_small_differences_are_not_mentioned():
    assert edge_moves(Box(10, 10, 50, 50), Box(11, 10, 51, 50), 200, 200) == []


def test_terse_style_keeps_the_directions():
    (out,) = GeometricTeacher(style="terse").write([_ctx(Box(60, 60, 100, 100), Box(20, 20, 60, 60))])
    assert _directions(out.reasoning) == {"left": "left", "right": "left", "top": "up", "bottom": "up"}
    assert len(out.reasoning) < 80
    with pytest.raises(Exception, match="style"):
        GeometricTeacher(style="haiku")


def test_minimal_style_names_the_kind_of_error():
    objects = [{"size": "small", "colour": "red", "kind": "circle", "box": [20, 20, 60, 60]},
               {"size": "large", "colour": "blue", "kind": "square", "box": [100, 100, 180, 180]}]
    teacher = GeometricTeacher(style="minimal")
    wrong, off = teacher.write([_ctx(Box(100, 100, 180, 180), Box(20, 20, 60, 60), objects=objects, target_object=0),
                                _ctx(Box(25, 22, 66, 60), Box(20, 20, 60, 60), objects=objects, target_object=0)])
    assert (wrong.reasoning, off.reasoning) == ("Wrong shape.", "Edges off.")
    assert teacher.keep_text("the red circle", "s") == "The box is correct."
    with pytest.raises(Exception, match="unknown teacher style"):
        GeometricTeacher(style="chatty")


def _obj(kind, colour, size, box):
    return {"kind": kind, "colour": colour, "size": size, "box": box}


def test_the_rationale_names_the_real_difference():
    from ivt_core.teachers.geometric import difference

    blue_star = _obj("star", "blue", "large", [10, 10, 40, 40])
    yellow_star = _obj("star", "yellow", "large", [100, 100, 130, 130])
    blue_circle = _obj("circle", "blue", "large", [150, 10, 180, 40])
    assert difference(yellow_star, blue_star) == "colour" and difference(blue_circle, blue_star) == "shape"
    assert difference(dict(blue_star, box=[0, 0, 1, 1]), blue_star) == "position"
    on_yellow = _ctx(Box(100, 100, 130, 130), Box(10, 10, 40, 40), objects=[blue_star, yellow_star],
                     target_object=0)
    (prose,) = GeometricTeacher().write([on_yellow])
    assert "wrong colour" in prose.reasoning and "yellow" in prose.reasoning and "blue" in prose.reasoning
    (minimal,) = GeometricTeacher(style="minimal").write([on_yellow])
    assert minimal.reasoning == "Wrong colour."
    (terse,) = GeometricTeacher(style="terse").write([on_yellow])
    assert "(wrong colour)" in terse.reasoning


def test_minimal_verdict_names_colour_when_only_colour_and_size_differ():
    from ivt_core.teachers.geometric import minimal_verdict

    target = _obj("circle", "red", "small", [0, 0, 10, 10])
    assert minimal_verdict(_obj("circle", "blue", "large", [20, 0, 40, 20]), target) == "Wrong colour."
    assert minimal_verdict(_obj("square", "blue", "large", [20, 0, 40, 20]), target) == "Wrong shape."
    assert minimal_verdict(_obj("circle", "red", "large", [20, 0, 40, 20]), target) == "Wrong size."
    assert minimal_verdict(_obj("circle", "red", "small", [20, 0, 30, 10]), target) == "Wrong one."
    objects = [target, _obj("circle", "blue", "large", [100, 100, 180, 180])]  # the teacher's words, too
    (out,) = GeometricTeacher(style="minimal").write([_ctx(Box(100, 100, 180, 180), Box(0, 0, 10, 10),
                                                           objects=objects, target_object=0)])
    assert out.reasoning == "Wrong colour."


def test_minimal_verdict_names_only_a_difference_the_expression_states():
    """With ``stated``, a difference the expression's words do not state ("the second circle from the top" says
    nothing of colour) is "Wrong one."; a stated one is named as before."""
    from ivt_core.teachers.geometric import minimal_verdict, minimal_verdict_on

    target = _obj("circle", "red", "small", [0, 0, 10, 10])
    blue = _obj("circle", "blue", "large", [20, 0, 40, 20])
    assert minimal_verdict(blue, target, {"kind": "circle"}) == "Wrong one."
    assert minimal_verdict(blue, target, {"kind": "circle", "size": "small"}) == "Wrong size."
    assert minimal_verdict(blue, target, {"colour": "red", "kind": "circle"}) == "Wrong colour."
    assert minimal_verdict(_obj("square", "blue", "large", [20, 0, 40, 20]), target, {"kind": "circle"}) \
        == "Wrong shape."
    objects = [target, blue]
    assert minimal_verdict_on(Box(20, 0, 40, 20), objects, 0, {"kind": "circle"}) == "Wrong one."
    assert minimal_verdict_on(Box(20, 0, 40, 20), objects, 0) == "Wrong colour."
