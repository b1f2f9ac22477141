import pytest

from ivt_core.errors import InvalidInputError
from ivt_core.evaluate import EvalRequest, evaluate
from ivt_core.explore import count_rows, iou_curve, sample_rows, step_view
from ivt_core.loop import LoopConfig
from ivt_core.store.views import run_sources
from tests.fakes import ScriptedGrounder


@pytest.fixture
def run(workspace):
    from ivt_core.data.shapes_split import write_shapes_split

    write_shapes_split(workspace, "test", 4)
    answers = ['[0, 0, 1000, 1000]', 'Move. [0, 0, 500, 500]', "??"]
    result = evaluate(workspace, ScriptedGrounder(lambda t, s: answers[s]), "/m",
                      EvalRequest("shapes", "test", LoopConfig(steps=2)))
    return workspace, result.run_id


def test_rows_worst_first_and_filters(run):
    workspace, run_id = run
    rows = sample_rows(workspace.connect(), run_id)
    assert len(rows) == 4 and [r["final_iou"] for r in rows] == sorted(r["final_iou"] for r in rows)
    assert all(r["failures"] == 1 for r in rows)
    assert len(sample_rows(workspace.connect(), run_id, parse_failures=True)) == 4
    assert sample_rows(workspace.connect(), run_id, search="zzz") == []


def test_source_and_iou_band_filters_and_count(run):
    workspace, run_id = run
    db = workspace.connect()
    rows = sample_rows(db, run_id)
    db.execute("UPDATE samples SET source = 'other' WHERE id = ?", [rows[0]["sample_id"]])
    db.conn.commit()
    assert run_sources(db, run_id) == sorted({"other", rows[1]["source"]})
    assert [r["sample_id"] for r in sample_rows(db, run_id, source="other")] == [rows[0]["sample_id"]]
    assert count_rows(db, run_id) == 4 and count_rows(db, run_id, source="other") == 1
    finals = sorted(r["final_iou"] for r in rows)
    band = sample_rows(db, run_id, iou_band=(finals[1], finals[2]))
    assert all(finals[1] <= r["final_iou"] <= finals[2] for r in band) and len(band) >= 2
    assert sample_rows(db, run_id, iou_band=(1.0, 1.0)) == [r for r in rows if r["final_iou"] == 1.0]
    assert len(sample_rows(db, run_id, limit=2)) == 2
    with pytest.raises(InvalidInputError, match="IoU band"):
        sample_rows(db, run_id, iou_band=(0.8, 0.2))


def test_step_view_and_curve(run):
    workspace, run_id = run
    db = workspace.connect()
    sample_id = sample_rows(db, run_id)[0]["sample_id"]
    image, info = step_view(workspace, db, run_id, sample_id, 1)
    assert info["reasoning"] == "Move." and info["box"] == [0.0, 0.0, 112.0, 112.0] and image.size == (224, 224)
    assert image.getpixel((1, 50)) == (255, 0, 0)
    assert len(iou_curve(db, run_id, sample_id)) == 3
    _, last = step_view(workspace, db, run_id, sample_id, 2)
    assert not last["parse_ok"] and last["box"] is None
    with pytest.raises(InvalidInputError):
        step_view(workspace, db, run_id, sample_id, 3)


def test_the_image_the_model_saw_at_each_step(run):
    from ivt_core.data.sample import load_image
    from ivt_core.store.samples import get_sample

    workspace, run_id = run
    db = workspace.connect()
    sample_id = sample_rows(db, run_id)[0]["sample_id"]
    original = load_image(workspace.resolve(get_sample(db, sample_id).image_path))
    first, info = step_view(workspace, db, run_id, sample_id, 0, model_view=True)
    assert first.tobytes() == original.tobytes()  # step 0: the image alone, no ground truth
    seen, _ = step_view(workspace, db, run_id, sample_id, 2, model_view=True)
    assert seen.getpixel((1, 50)) == (255, 0, 0)  # step 2 was shown step 1's box [0, 0, 112, 112] in the run's red
    assert seen.getpixel((150, 150)) == original.getpixel((150, 150))  # outside that box: untouched
    assert info["tokens_in"] >= 0 and info["traces"] == []
