"""benchmarks/derived_verdict.py: the verdict a name-first answer's own name implies, and an answer generated after
a forced start."""

import pytest


@pytest.fixture(scope="module")
def derived(benchmark_module):
    return benchmark_module("derived_verdict")


@pytest.mark.parametrize("expression, reasoning, verdict", [
    ("the red square", "It is on the small red square. Wrong colour.", None),  # its name agrees: keep
    ("the red square", "It is on the small blue square. The box is correct.", "Wrong colour."),
    ("the small red square", "It is on the large red square.", "Wrong size."),
    ("the red square", "It is on the small blue circle.", "Wrong shape."),  # shape first, as the teacher
    ("the second square from the top", "It is on the small blue square.", None),  # nothing it can check
    ("the red star right of the blue circle", "It is on the large blue star.", "Wrong colour."),
    ("the red square", "The box is correct.", None),  # no name
])
def test_the_verdict_its_own_name_implies(derived, expression, reasoning, verdict):
    found = derived.derived_verdict(expression, reasoning)
    assert (found[1] if found else None) == verdict
    if found:
        assert reasoning.startswith(found[0])


def test_an_answer_generated_after_a_forced_start_keeps_that_start(derived):
    from ivt_core.config.toy import world_config
    from ivt_core.data.shapes import make_sample
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    sample = make_sample(world_config("shapes-v2"), 0, "test", 0)
    grounder = TransformersGrounder.load("assets/toy-model", device="cpu")
    conversation = [{"role": "user", "content": [{"type": "image", "image": sample.image},
                                                 {"type": "text", "text": "Where is it?"}]}]
    start = "It is on the small red square. Wrong colour.\n"
    answer = derived.generate_after(grounder, conversation, start, 8)
    assert answer.startswith(start) and len(answer) > len(start)  # something generated after it
