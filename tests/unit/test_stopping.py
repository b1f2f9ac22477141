import pytest

from ivt_core.boxes import Box
from ivt_core.errors import InvalidInputError
from ivt_core.stopping import check_policy, should_stop, stop_step
from tests.helpers import step


def test_step0_never_stops():
    assert not should_stop([step(0, 0.5)], "converged")


def test_converged_needs_high_overlap_of_consecutive_boxes():
    a, b = Box(0, 0, 100, 100), Box(1, 1, 100, 100)
    assert should_stop([step(0, 0.5, a), step(1, 0.5, b)], "converged")
    assert not should_stop([step(0, 0.5, a), step(1, 0.5, Box(20, 0, 120, 100))], "converged")


def test_agree_is_within_two_pixels():
    a = Box(0, 0, 10, 10)
    assert should_stop([step(0, 0, a), step(1, 0, Box(2, 0, 10, 11))], "agree")
    assert not should_stop([step(0, 0, a), step(1, 0, Box(3, 0, 10, 10))], "agree")


def test_missing_box_never_converges():
    assert not should_stop([step(0, 0, ok=False), step(1, 0, ok=False)], "converged")


def test_fixed_never_stops_early():
    a = Box(0, 0, 10, 10)
    assert stop_step([step(0, 0, a), step(1, 0, a), step(2, 0, a)], "fixed") == 2


def test_oracle_picks_best_earliest():
    assert stop_step([step(0, 0.5), step(1, 0.9), step(2, 0.9)], "oracle") == 1


def test_check_policy_rejects_oracle_for_live_runs():
    with pytest.raises(InvalidInputError, match="analysis only"):
        check_policy("oracle")
    assert check_policy("oracle", allow_oracle=True) == "oracle"
