"""benchmarks/naming_check.py: what a naming answer names (the self-check compares it with what the expression
states, ``shapes.stated_attributes``, tested in test_shapes.py)."""

import pytest


@pytest.fixture(scope="module")
def naming_check(benchmark_module):
    return benchmark_module("naming_check")


@pytest.mark.parametrize("answer, named", [
    ("The small red circle.", {"size": "small", "colour": "red", "kind": "circle"}),
    ("The large orange star. The small red circle.", {"size": "large", "colour": "orange", "kind": "star"}),
    ('{"bbox_2d": [1, 2, 3, 4]}', {}),
])
def test_what_a_naming_answer_names(naming_check, answer, named):
    assert naming_check.named_attributes(answer) == named
