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
