import pytest

from ivt_core.boxes import Box
from ivt_core.paper_table import mcnemar, step_rates
from ivt_core.records import StepRecord, Trajectory


def test_mcnemar_exact_literal():
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(0, 4) == pytest.approx(2 / 16)
    assert mcnemar(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar(3, 3) == 1.0
    assert mcnemar(2, 10) == mcnemar(10, 2)


def test_step_rates_literal():
    def t(ious, stop=None):
        steps = [StepRecord(i, "", "", Box(0, 0, 1, 1), v, True) for i, v in enumerate(ious)]
        return Trajectory("x", steps, stop_step=len(ious) - 1 if stop is None else stop)

    rows = step_rates([t([0.9, 0.2, 0.8]), t([0.1, 0.6, 0.6]), t([0.7, 0.7, 0.1], stop=1)])
    assert [r["n"] for r in rows] == [3, 2]
    assert rows[0]["fix"] == pytest.approx(1 / 3) and rows[0]["break"] == pytest.approx(1 / 3)
    assert rows[0]["degradation"] == pytest.approx(0.7 / 3)
    assert rows[1]["fix"] == pytest.approx(0.5) and rows[1]["break"] == 0.0 and rows[1]["degradation"] == 0.0


def test_self_selection_takes_the_box_the_others_agree_with():
    from ivt_core.paper_table import self_selected

    a, a2, b = Box(0, 0, 10, 10), Box(1, 1, 11, 11), Box(50, 50, 60, 60)
    assert self_selected([b, a, a2]) == 1  # a and a2 agree; b agrees with nobody
    assert self_selected([a, b]) == 0  # two candidates agree equally: the greedy one (first) stays
    assert self_selected([None, a, a2]) == 1  # an unreadable answer agrees with nothing
    assert self_selected([None, None]) == 0


def test_the_verifier_cell_says_where_p_keep_was_read():
    from ivt_core.paper_table import verifier_cell

    assert verifier_cell({}) == "not measured"
    assert verifier_cell({"verifier": []}) == "not measured"
    assert verifier_cell({"verifier": [{"auroc": None}]}) == "n/a"
    assert verifier_cell({"verifier": [{"auroc": 0.5714}]}) == "0.571"
    assert verifier_cell({"verifier": [{"auroc": 0.7, "reasoning_first": True}]}) == "0.700 (after its reasoning)"
    assert verifier_cell({"verifier": [{"auroc": 0.461}, {"auroc": 0.789, "reasoning_first": True}]}) == \
        "0.461, 0.789 (after its reasoning)"


def test_changes_account_for_the_answers_a_step_changed():
    """Of the answers step t changed (moved to IoU < 0.99 with the box before, or unreadable): the share wrong
    before, the share of those fixed, of the right ones broken, and the precision above which changing gains."""
    from ivt_core.paper_table import changes, changes_text

    a, b = Box(0, 0, 10, 10), Box(50, 50, 60, 60)

    def pair(before_iou, after_iou, moved=True, readable=True):
        return (StepRecord(0, "", "", a, before_iou, True),
                StepRecord(1, "", "", (b if moved else a) if readable else None, after_iou, readable))

    pairs = [pair(0.1, 0.8), pair(0.2, 0.1), pair(0.9, 0.0), pair(0.8, 0.7), pair(0.95, 0.2, readable=False),
             pair(0.9, 0.9, moved=False), pair(0.3, 0.3, moved=False)]
    c = changes(pairs)
    assert c["changed"] == 5 and c["changed_wrong"] == pytest.approx(2 / 5)
    assert c["fixed_of_wrong"] == pytest.approx(1 / 2) and c["broken_of_right"] == pytest.approx(2 / 3)
    assert c["pays_above"] == pytest.approx((2 / 3) / (1 / 2 + 2 / 3))  # 0.571
    assert changes_text(c) == ("changed 5 answers, 40% of them wrong before: fixed 50% of the wrong ones, broke 67% "
                               "of the right ones (changing gains above 57% wrong)")
    assert changes([pair(0.9, 0.9, moved=False)]) == {"changed": 0, "changed_wrong": None, "fixed_of_wrong": None,
                                                       "broken_of_right": None, "pays_above": None}
    assert changes_text(changes([])) == "changed no answer"
    assert changes([pair(0.1, 0.8)])["pays_above"] is None  # no right box changed: nothing to weigh
    assert changes_text(changes([pair(0.1, 0.8)])) == "changed 1 answer, 100% of them wrong before: fixed 100% of " \
                                                      "the wrong ones"
    rows = step_rates([Trajectory("x", list(p), stop_step=1) for p in pairs])
    assert rows[0]["changed"] == 5 and rows[0]["n"] == 7
