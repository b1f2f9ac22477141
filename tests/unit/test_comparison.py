import pytest

from ivt_core.comparison import per_sample, side_by_side
from ivt_core.errors import InvalidInputError
from ivt_core.evaluate import EvalRequest, evaluate
from ivt_core.loop import LoopConfig
from ivt_core.store.samples import get_samples
from tests.fakes import ScriptedGrounder


@pytest.fixture
def runs(workspace):
    """Run A answers the whole image at every step; run B (one step more) answers the truth on its first
    sample only, from step 1 on, and an empty corner elsewhere."""
    from ivt_core.data.shapes_split import write_shapes_split

    write_shapes_split(workspace, "test", 4)
    samples = get_samples(workspace.connect(), "shapes", "test")
    first = samples[0]
    truth = "[" + ", ".join(str(round(v / first.width * 1000)) for v in first.bbox.to_xyxy()) + "]"

    def b_answer(text, step, conversation):
        is_first = conversation[0]["content"][-1]["text"].find(first.expression) >= 0
        return truth if (is_first and step >= 1) else "[0, 0, 5, 5]"

    a = evaluate(workspace, ScriptedGrounder(lambda t, s: "[0, 0, 1000, 1000]"), "/a",
                 EvalRequest("shapes", "test", LoopConfig(steps=1)))
    b = evaluate(workspace, ScriptedGrounder(b_answer, with_conversation=True), "/b",
                 EvalRequest("shapes", "test", LoopConfig(steps=2)))
    return workspace, a.run_id, b.run_id, first.id


def test_per_sample_lists_differences_biggest_first_and_filters(runs):
    workspace, a, b, first = runs
    db = workspace.connect()
    rows = per_sample(db, [a, b])
    assert len(rows) == 4
    deltas = [abs(r[f"delta {b}"]) for r in rows]
    assert deltas == sorted(deltas, reverse=True)
    for r in rows:
        assert r[f"delta {b}"] == pytest.approx(r[f"final {b}"] - r[f"final {a}"])
    wins = per_sample(db, [a, b], "wins")
    losses = per_sample(db, [a, b], "losses")
    ties = per_sample(db, [a, b], "ties")
    assert len(wins) + len(losses) + len(ties) == 4
    assert [r["sample_id"] for r in wins] == [first] and wins[0][f"final {b}"] > 0.99
    assert all(r[f"delta {b}"] < -0.05 for r in losses)
    with pytest.raises(InvalidInputError):
        per_sample(db, [a])
    with pytest.raises(InvalidInputError, match="show"):
        per_sample(db, [a, b], "best")


def test_side_by_side_shares_the_step_and_clamps_shorter_trajectories(runs):
    workspace, a, b, first = runs
    views = side_by_side(workspace, workspace.connect(), [a, b], first, 2)
    (image_a, info_a), (image_b, info_b) = views
    assert info_a["shown_step"] == 1 and info_a["asked_step"] == 2 and info_a["run_id"] == a
    assert info_b["shown_step"] == 2 and info_b["iou"] > 0.99
    assert image_a.size == image_b.size
