import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ivt_core.parse import parse_answer


def test_qwen3_json():
    p = parse_answer('{"bbox_2d": [100, 200, 300, 400], "label": "cat"}')
    assert p.coords == (100, 200, 300, 400) and p.ok


def test_list_of_objects_takes_last():
    p = parse_answer('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]')
    assert p.coords == (5, 6, 7, 8)


def test_reasoning_then_fenced_json():
    text = 'The box covers the blue square; move right.\n```json\n{"bbox_2d": [10, 20, 30, 40]}\n```'
    p = parse_answer(text)
    assert p.coords == (10, 20, 30, 40)
    assert p.reasoning == "The box covers the blue square; move right."


def test_answer_tags_and_think():
    p = parse_answer("<think>old box [1, 1, 2, 2] is off</think> shift it <answer>[10, 11, 12, 13]</answer>")
    assert p.coords == (10, 11, 12, 13)
    assert "old box" in p.reasoning and "shift it" in p.reasoning


def test_qwen2_box_tokens():
    p = parse_answer("<|object_ref_start|>dog<|object_ref_end|><|box_start|>(12,34),(56,78)<|box_end|>")
    assert p.coords == (12, 34, 56, 78)


def test_bare_list_and_decimals():
    assert parse_answer("[0.1, 0.2, 0.5, 0.9]").coords == (0.1, 0.2, 0.5, 0.9)


def test_inverted_coordinates_kept_for_boxes_to_fix():
    assert parse_answer('{"bbox_2d": [300, 400, 100, 200]}').coords == (300, 400, 100, 200)


def test_empty_and_prose_fail_cleanly():
    assert parse_answer("").failure == "the answer is empty"
    p = parse_answer("I cannot see any such object.")
    assert not p.ok and "no box" in p.failure


def test_wrong_number_count():
    p = parse_answer('{"bbox_2d": [1, 2, 3]}')
    assert not p.ok and "3 numbers" in p.failure


def test_non_text_input():
    assert not parse_answer(None).ok


def test_says_correct():
    assert parse_answer('The box is correct. {"bbox_2d": [1, 2, 3, 4]}').says_correct
    assert not parse_answer('Move it left. {"bbox_2d": [1, 2, 3, 4]}').says_correct


@given(st.text())
@settings(max_examples=400)
def test_never_raises_on_any_text(text):
    p = parse_answer(text)
    assert p.coords is None or len(p.coords) == 4
    assert (p.coords is None) == (p.failure is not None)


@given(st.lists(st.integers(-2000, 2000), min_size=4, max_size=4), st.text(alphabet="abc ,.\n", max_size=40))
def test_finds_json_box_after_any_prose(coords, prose):
    p = parse_answer(prose + json.dumps({"bbox_2d": coords}))
    assert p.coords == tuple(float(c) for c in coords)
