from ivt_core.boxes import Box
from ivt_core.error_kinds import error_kind, kind_shares
from ivt_core.records import StepRecord, Trajectory

META = {"target": 0, "objects": [{"box": [0, 0, 10, 10]}, {"box": [50, 50, 60, 60]}]}
GT = Box(0, 0, 10, 10)


def test_kinds_literal():
    assert error_kind(Box(0, 0, 10, 9), GT, META) == "correct"
    assert error_kind(Box(0, 0, 10, 30), GT, META) == "loose edges"
    assert error_kind(Box(49, 49, 61, 61), GT, META) == "wrong object"
    assert error_kind(Box(80, 80, 90, 90), GT, META) == "background"
    assert error_kind(None, GT, META) == "unreadable"
    assert error_kind(Box(0, 0, 10, 9), GT, META, tau=0.95) == "loose edges"
    assert error_kind(Box(0, 0, 10, 30), GT, {}) == "loose edges"
    assert error_kind(Box(80, 80, 90, 90), GT, None) == "elsewhere"


def test_shares_at_step0_and_final():
    def step(i, box):
        return StepRecord(i, "", "", box, 0.0, box is not None)

    trajectories = [Trajectory("a", [step(0, Box(0, 0, 10, 10)), step(1, Box(50, 50, 60, 60))], stop_step=1),
                    Trajectory("b", [step(0, None), step(1, Box(0, 0, 10, 30))], stop_step=1),
                    Trajectory("unknown", [step(0, None)])]
    samples = {"a": {"bbox": GT, "meta": META}, "b": {"bbox": GT, "meta": META}}
    shares = kind_shares(trajectories, samples)
    assert shares == {"step0": {"correct": 0.5, "unreadable": 0.5},
                      "final": {"loose edges": 0.5, "wrong object": 0.5}}
