import pytest

from ivt_core.data.shapes import ShapesConfig, generate, make_sample
from ivt_core.errors import InvalidInputError


def test_deterministic_from_seed():
    a = make_sample(ShapesConfig(), 0, "test", 3)
    b = make_sample(ShapesConfig(), 0, "test", 3)
    assert a.expression == b.expression and a.bbox == b.bbox and a.image.tobytes() == b.image.tobytes()


def test_splits_and_seeds_differ():
    a = make_sample(ShapesConfig(), 0, "test", 0)
    assert make_sample(ShapesConfig(), 0, "train", 0).image.tobytes() != a.image.tobytes()
    assert make_sample(ShapesConfig(), 1, "test", 0).image.tobytes() != a.image.tobytes()


def test_box_is_target_object_and_inside_image():
    for s in generate(ShapesConfig(), 0, "val", 40):
        target = s.meta["objects"][s.meta["target"]]
        assert [round(v, 2) for v in s.bbox.to_xyxy()] == target["box"]
        assert s.bbox.inside(224, 224) and not s.bbox.is_empty()


def test_all_expression_types_appear():
    kinds = {s.meta["expression_type"] for s in generate(ShapesConfig(), 0, "train", 60)}
    assert kinds == {"attribute", "relation", "ordinal"}


def test_relation_expression_is_unambiguous():
    for s in generate(ShapesConfig(), 0, "train", 80):
        if s.meta["expression_type"] == "relation":
            t = s.meta["objects"][s.meta["target"]]
            assert s.expression.startswith(f"the {t['colour']} {t['kind']} ")


def test_bad_split_and_count():
    with pytest.raises(InvalidInputError):
        list(generate(ShapesConfig(), 0, "dev", 1))
    with pytest.raises(InvalidInputError):
        list(generate(ShapesConfig(), 0, "test", -1))



@pytest.mark.parametrize("expression, stated", [
    ("the small red circle", {"size": "small", "colour": "red", "kind": "circle"}),
    ("the blue square left of the green star", {"colour": "blue", "kind": "square"}),
    ("the square below the small red circle", {"kind": "square"}),
    ("the second triangle from the top", {"kind": "triangle"}),
    ("the large hexagon", {"size": "large", "kind": "hexagon"}),
    ("the thing", {}),
])
def test_what_the_expression_states_about_the_asked_object(expression, stated):
    """``stated_attributes``: the asked object's own words only (not the anchor's of a relation)."""
    from ivt_core.data.shapes import stated_attributes

    assert stated_attributes(expression) == stated
