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


def test_stated_attributes_are_the_asked_objects_own_words():
    """What an expression states about the object it asks for: the words before a relation only."""
    from ivt_core.data.shapes import stated_attributes

    assert stated_attributes("the small blue circle") == {"size": "small", "colour": "blue", "kind": "circle"}
    assert stated_attributes("the second hexagon from the top") == {"kind": "hexagon"}
    assert stated_attributes("the first star from the left") == {"kind": "star"}
    assert stated_attributes("the red star right of the orange star") == {"colour": "red", "kind": "star"}
    assert stated_attributes("the square below the small red circle") == {"kind": "square"}
    assert stated_attributes("the large triangle left of the green square") == {"size": "large", "kind": "triangle"}
