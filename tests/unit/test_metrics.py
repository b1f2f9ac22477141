import pytest

from ivt_core.boxes import Box
from ivt_core.metrics import accuracy, degradation, outcome, run_metrics
from tests.helpers import step, traj


def test_accuracy_counts_at_threshold():
    assert accuracy([0.5, 0.49, 0.7, 0.0], 0.5) == 0.5


def test_degradation_only_counts_losses():
    assert degradation(traj([0.8, 0.5, 0.6, 0.2])) == pytest.approx([0.3, 0.0, 0.4])


def test_outcomes():
    assert outcome(traj([0.3, 0.5])) == "improved"
    assert outcome(traj([0.5, 0.3])) == "degraded"
    assert outcome(traj([0.5, 0.52])) == "unchanged"
    assert outcome(traj([0.5, 0.9, 0.5])) == "oscillating"


def test_run_metrics_literal():
    a = traj([0.8, 0.6, 0.4])  # degrades
    b = traj([0.4, 0.6, 0.72])  # improves
    m = run_metrics([a, b])
    assert m["step0"]["acc@0.5"] == 0.5
    assert m["final"]["acc@0.5"] == 0.5 and m["final"]["acc@0.7"] == 0.5
    assert m["oracle"]["acc@0.7"] == 1.0 and m["oracle"]["label"] == "oracle (uses ground truth)"
    assert m["oracle"]["miou"] == pytest.approx(0.76)
    assert m["degradation"] == pytest.approx((0.2 + 0.2 + 0 + 0) / 4)
    assert m["outcomes"] == {"improved": 0.5, "degraded": 0.5, "unchanged": 0.0, "oscillating": 0.0}
    assert [p["miou"] for p in m["per_step"]] == pytest.approx([0.6, 0.6, 0.56])
    assert m["parse_failure_rate"] == 0.0


def test_label_free_policies_replayed_over_recorded_steps():
    same = Box(0, 0, 10, 10)
    converging = traj([0.3, 0.9, 0.2], [Box(50, 50, 60, 60), same, same])  # stops at step 2 (b1 == b2)
    early = traj([0.9, 0.9, 0.1], [same, same, Box(90, 90, 99, 99)])  # converged after step 1
    m = run_metrics([converging, early])
    assert m["policies"]["converged"]["miou"] == pytest.approx((0.2 + 0.9) / 2)
    assert m["policies"]["converged"]["mean_stop_step"] == 1.5
    assert m["policies"]["fixed"]["miou"] == pytest.approx((0.2 + 0.1) / 2)


def test_self_policy_uses_verdict():
    t = traj([0.4, 0.8, 0.1])
    t.steps[1] = step(1, 0.8, Box(0, 0, 5, 5), says_correct=True)
    assert run_metrics([t])["policies"]["self"]["miou"] == pytest.approx(0.8)


def test_parse_failures_are_misses():
    t = traj([0.0])
    t.steps[0] = step(0, 0.0, ok=False)
    m = run_metrics([t])
    assert m["parse_failure_rate"] == 1.0 and m["step0"]["acc@0.5"] == 0.0


def test_empty_run():
    assert run_metrics([])["n"] == 0


def test_iou_exactly_at_threshold_counts_as_hit():
    from ivt_core.boxes import iou

    exact_half = iou(Box(0, 0, 10, 10), Box(0, 0, 10, 20))
    assert exact_half == 0.5
    m = run_metrics([traj([exact_half])])
    assert m["step0"]["acc@0.5"] == 1.0 and m["step0"]["acc@0.7"] == 0.0
