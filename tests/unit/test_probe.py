import json

import pytest
from PIL import Image

from ivt_core.boxes import Box
from ivt_core.data.sample import Sample
from ivt_core.probe import COUNTERFACTUALS, pearson, probe_samples, summarize_probe
from tests.fakes import ScriptedGrounder

GT = Box(20, 20, 60, 60)
GT_1000 = [100, 200, 300, 600]  # GT in 0-1000 of a 200x100 image


def _samples(n=4):
    return [Sample(f"s{i}", "d", "test", "", 200, 100, "the thing", GT) for i in range(n)], [
        Image.new("RGB", (200, 100), "white")] * n


def _oracle(text, step, conversation):
    return json.dumps({"bbox_2d": GT_1000})  # always answers the truth: corrects bad boxes most


def _presence(text, step, conversation):
    if step == 0:
        return json.dumps({"bbox_2d": GT_1000})
    shown = json.loads(conversation[1]["content"][0]["text"])["bbox_2d"]
    return json.dumps({"bbox_2d": [shown[0] + 50, shown[1], shown[2] + 50, shown[3]]})  # same nudge always


def test_every_counterfactual_is_asked():
    samples, images = _samples(1)
    rows = probe_samples(ScriptedGrounder(_oracle, with_conversation=True), samples, images)
    assert [r.shown for r in rows] == [c for c in COUNTERFACTUALS if c != "look-alike"]  # no known objects
    by = {r.shown: r for r in rows}
    assert by["ground truth"].shown_iou == pytest.approx(1.0) and by["none"].shown_iou is None
    assert 0.4 < by["shifted 20%"].shown_iou < 0.5 and by["shifted 60%"].shown_iou < 0.15


def test_accuracy_driven_model_has_strong_negative_correlation():
    samples, images = _samples()
    summary = summarize_probe(probe_samples(ScriptedGrounder(_oracle, with_conversation=True), samples, images))
    assert summary["corr_shown_iou_vs_moved"] < -0.95
    assert summary["per_counterfactual"]["random"]["mean_next_iou"] == pytest.approx(1.0)


def test_presence_driven_model_moves_every_box_alike():
    samples, images = _samples()
    summary = summarize_probe(probe_samples(ScriptedGrounder(_presence, with_conversation=True), samples, images))
    moved = [d["mean_moved"] for name, d in summary["per_counterfactual"].items() if name not in ("none", "re-ask")]
    assert max(moved) - min(moved) < 0.35
    assert summary["corr_shown_iou_vs_gain"] < 0  # good boxes get worse, bad ones do not get fixed


def test_pearson_literal():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and pearson([1, 2], [1, 2]) is None


def test_reask_asks_the_same_question_again_without_a_box():
    samples, images = _samples(2)

    def context_bound(text, step, conversation):  # answers only a first turn: cannot hold a conversation
        return json.dumps({"bbox_2d": GT_1000}) if len(conversation) == 1 else "{{{"

    def holds(text, step, conversation):  # answers the grounding question in any turn, nothing else
        last = conversation[-1]["content"][1]["text"]
        return json.dumps({"bbox_2d": GT_1000}) if last.startswith("Locate") else "??"

    for answer, readable in ((context_bound, 0.0), (holds, 1.0)):
        rows = probe_samples(ScriptedGrounder(answer, with_conversation=True), samples, images,
                             counterfactuals=("re-ask",))
        assert [r.shown for r in rows] == ["re-ask", "re-ask"] and all(r.shown_box is None for r in rows)
        summary = summarize_probe(rows)
        assert summary["step0_acc@0.5"] == 1.0
        assert summary["per_counterfactual"]["re-ask"]["readable"] == readable
        assert summary["per_counterfactual"]["re-ask"]["acc@0.5"] == readable


def test_a_verdict_that_the_box_is_correct_answers_with_the_drawn_box_as_the_loop_reads_it():
    samples, images = _samples(2)

    def yes_man(text, step, conversation):  # keeps every box, then types coordinates of nothing
        return json.dumps({"bbox_2d": GT_1000}) if step == 0 else 'The box is correct. {"bbox_2d": [0, 0, 5, 5]}'

    rows = probe_samples(ScriptedGrounder(yes_man, with_conversation=True), samples, images)
    drawn = [r for r in rows if r.shown_box is not None]
    assert drawn and all(r.says_correct and r.moved == 0 and r.next_iou == pytest.approx(r.shown_iou) for r in drawn)
    summary = summarize_probe(rows)["per_counterfactual"]
    assert summary["random"]["says_correct"] == 1.0 and summary["random"]["acc@0.5"] == 0.0
    assert summary["ground truth"]["acc@0.5"] == 1.0


def test_the_look_alike_is_another_object_of_the_asked_shape():
    objects = [{"kind": "circle", "box": [20, 20, 60, 60]}, {"kind": "square", "box": [100, 10, 140, 50]},
               {"kind": "circle", "box": [150, 40, 190, 80]}]
    sample = Sample("s0", "d", "test", "", 200, 100, "the red circle", GT, meta={"objects": objects, "target": 0})
    rows = probe_samples(ScriptedGrounder(_oracle, with_conversation=True), [sample], [Image.new("RGB", (200, 100))])
    assert [r.shown for r in rows] == list(COUNTERFACTUALS)
    (alike,) = [r for r in rows if r.shown == "look-alike"]
    assert alike.shown_box == [150, 40, 190, 80] and alike.shown_iou == 0.0
