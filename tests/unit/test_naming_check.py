"""benchmarks/naming_check.py: what an expression states about the object it asks for, and what a naming answer
names (the self-check compares the two)."""

import importlib
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def naming_check():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        yield importlib.import_module("naming_check")
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize("expression, stated", [
    ("the small red circle", {"size": "small", "colour": "red", "kind": "circle"}),
    ("the blue square left of the green star", {"colour": "blue", "kind": "square"}),
    ("the second triangle from the top", {"kind": "triangle"}),
    ("the large hexagon", {"size": "large", "kind": "hexagon"}),
    ("the thing", {}),
])
def test_what_the_expression_states_about_the_asked_object(naming_check, expression, stated):
    assert naming_check.stated_attributes(expression) == stated


@pytest.mark.parametrize("answer, named", [
    ("The small red circle.", {"size": "small", "colour": "red", "kind": "circle"}),
    ("The large orange star. The small red circle.", {"size": "large", "colour": "orange", "kind": "star"}),
    ('{"bbox_2d": [1, 2, 3, 4]}', {}),
])
def test_what_a_naming_answer_names(naming_check, answer, named):
    assert naming_check.named_attributes(answer) == named
