"""The review queue the Traces tab walks, the training form's checks, and the first-start evaluation."""

import pytest

from ivt_core import jobs
from ivt_core.bootstrap import TOY_MODEL_PATH
from ivt_core.config.training import GRPOConfig, SFTConfig
from ivt_core.errors import InvalidInputError
from ivt_core.first_start import start_first_jobs
from ivt_core.review import check_box, history_rows, next_trace, queue_filters, trace_view
from ivt_core.store.traces import get_trace, list_traces
from ivt_core.teachers.geometric import GeometricTeacher
from ivt_core.traces import SynthConfig, approve, edit_box, edit_reasoning, synthesize
from tests.integration.test_traces import run  # noqa: F401 - the fixture


@pytest.fixture
def queue(run):  # noqa: F811
    workspace, run_id = run
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2))
    return workspace, workspace.connect()


def test_queue_walks_forward_and_back_wraps_and_skips_reviewed(queue):
    workspace, db = queue
    ids = [t["id"] for t in list_traces(db)]
    assert len(ids) == 5
    pending = queue_filters("pending")
    first = next_trace(db, None, pending)
    assert first["id"] == ids[0]
    assert next_trace(db, ids[0], pending)["id"] == ids[1]
    assert next_trace(db, ids[1], pending, backwards=True)["id"] == ids[0]
    assert next_trace(db, ids[-1], pending)["id"] == ids[0]  # wraps around
    approve(db, ids[1], 1, "me")
    assert next_trace(db, ids[0], pending)["id"] == ids[2]  # the approved one left the queue
    assert next_trace(db, ids[0], queue_filters("approved"))["id"] == ids[1]
    for trace_id in ids:
        trace = get_trace(db, trace_id)
        if trace["status"] == "pending":
            approve(db, trace_id, trace["version"], "me")
    assert next_trace(db, None, pending) is None


def test_queue_filters_drop_the_full_band_and_all():
    assert queue_filters("all", "all", "  ", 0.0, 1.0) == {}
    assert queue_filters("pending", "keep", "red circle", 0.2, 0.8) == {
        "status": "pending", "kind": "keep", "search": "red circle", "iou_min": 0.2, "iou_max": 0.8}


@pytest.mark.parametrize("values, message", [
    ([10, 10, 5, 20], "x2 (5) must be greater than x1 (10)"),
    ([10, 30, 20, 20], "y2 (20) must be greater than y1 (30)"),
    ([10, 10, 20, None], "all four numbers"),
    ([10, 10, 500, 20], "inside the 224x224 image"),
])
def test_typed_boxes_are_checked_with_what_to_fix(values, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_box(values, 224, 224)


def test_trace_view_previews_an_edit_and_history_shows_diffs(queue):
    workspace, db = queue
    trace = list_traces(db, limit=1)[0]
    gt = trace_view(workspace, db, trace, 2)[1]["ground_truth"]
    image, info = trace_view(workspace, db, trace, 2, check_box(gt, 224, 224))
    assert info["target_iou"] == pytest.approx(1.0) and image.size == (224, 224)
    _, moved = trace_view(workspace, db, trace, 1, check_box([0, 0, 10, 10], 224, 224))
    assert moved["edited"] and moved["target_iou"] == 0.0
    with pytest.raises(InvalidInputError, match="steps 1..2"):
        trace_view(workspace, db, trace, 3)
    version = edit_reasoning(db, trace["id"], 1, 1, "Move the box left. It is too wide.", "me")
    edit_box(db, trace["id"], version, 1, [1, 2, 30, 40], "me")
    rows = history_rows(db, trace["id"])
    assert [r["action"] for r in rows] == ["create", "edit_text", "edit_box"]
    assert "+Move the box left" in rows[1]["change"] and rows[1]["change"].count("-") >= 1
    assert rows[2]["change"].endswith("-> [1, 2, 30, 40]")


TOY = {"id": 1, "name": "toy", "base_path": "/models/toy", "adapter_path": ""}


def test_training_configs_for_a_registered_model():
    sft = SFTConfig.for_model(TOY, epochs=3, lr=1e-4, lora_r=8, replay=0.5, full_finetune=True)
    assert sft.base == "/models/toy" and sft.full_finetune and sft.lr == 1e-4
    grpo = GRPOConfig.for_model({**TOY, "adapter_path": "/a"}, group_size=4, beta=0.1)
    assert grpo.init_adapter == "/a" and grpo.max_steps == 50


@pytest.mark.parametrize("config, message", [
    (lambda: SFTConfig(base=str(TOY_MODEL_PATH), lr=-1), "lr must be between"),
    (lambda: SFTConfig(base=str(TOY_MODEL_PATH), lora_r=0), "lora_r must be between"),
    (lambda: SFTConfig(base=str(TOY_MODEL_PATH), epochs=0), "epochs > 0"),
    (lambda: SFTConfig.for_model({**TOY, "adapter_path": "/a"}), "is an adapter"),
    (lambda: GRPOConfig(base=str(TOY_MODEL_PATH), group_size=1), "group_size must be between 2"),
    (lambda: GRPOConfig(base=str(TOY_MODEL_PATH), reward="nope"), "reward must be one of"),
    (lambda: GRPOConfig(base=str(TOY_MODEL_PATH), steps=11), "steps must be between 0 and 10"),
    (lambda: GRPOConfig(base="/nonexistent"), "config.json"),
])
def test_training_configs_refuse_nonsense(config, message):
    with pytest.raises(InvalidInputError, match=message):
        config().check()


def test_first_start_queues_evaluations_and_a_synthesis_only_on_an_untouched_workspace(workspace, monkeypatch):
    from ivt_core.bootstrap import ensure_shipped_models

    started = []

    def fake_submit(ws, kind, config, after=None, needs_success=True):
        started.append((kind, config, after))
        return 7 + len(started)

    monkeypatch.setattr(jobs, "submit", fake_submit)
    models = ensure_shipped_models(workspace)
    assert set(models) == {"toy-model", "toy-model-sft", "toy-model-grpo"}
    assert start_first_jobs(workspace, models) == [8, 9, 10, 11, 12, 13]
    (k1, a1, after1), (k2, a2, after2), (k3, a3, after3), (k4, a4, after4), (k5, a5, after5), (k6, a6, after6) = started
    assert (k1, k2, k3, k4, k5, k6) == ("eval", "eval", "synth", "eval", "eval", "eval")
    assert (after1, after2, after3, after4, after5, after6) == (None, 8, 9, 10, 11, 12)
    assert (a1.split, a1.steps, a1.limit, a1.verdict) == ("val", 2, 100, "own")
    assert a4.model.endswith("toy-model-sft") and a4.split == "val" and not a4.adapter and a4.verdict == "own"
    assert a5.model.endswith("toy-model-sft") and not a5.adapter and a5.verdict == "derived"  # its name's verdict
    assert a6.model.endswith("toy-model-sft") and a6.adapter.endswith("toy-model-grpo") and a6.split == "val"
    assert a6.verdict == "derived"
    assert a2.split == "train" and a3.run_of_job == 9  # traces come from train samples, never val or test
    for config in (a1, a2, a4, a5, a6):
        jobs.checked_config(workspace, "eval", config)  # what the job runner accepts
    a3.check()  # (its preflight would look for job 9, which this test does not start)
    db = workspace.connect()
    db.execute("INSERT INTO jobs (kind, status, argv, created_at, log_path) VALUES ('eval', 'done', '[]', 'x', '')")
    assert start_first_jobs(workspace, models) == []


def test_default_splits_leave_a_users_own_shapes_dataset_alone(workspace):
    from ivt_core.bootstrap import ensure_default_data
    from ivt_core.data.shapes import ShapesConfig
    from ivt_core.data.shapes_split import write_shapes_split

    write_shapes_split(workspace, "test", 3, seed=0, config=ShapesConfig(image_size=320))
    assert ensure_default_data(workspace) == {}  # another world: no default splits forced into it


def test_a_bulk_action_can_be_undone_unless_changed_since(queue):
    from ivt_core.traces import bulk, restore_statuses

    workspace, db = queue
    ids = [t["id"] for t in list_traces(db, status="pending", limit=3)]
    before = {i: get_trace(db, i) for i in ids}
    bulk(db, ids, "approve", "me")
    changed = {i: {"status": before[i]["status"], "version": get_trace(db, i)["version"]} for i in ids}
    edit_reasoning(db, ids[0], get_trace(db, ids[0])["version"], 1, "Changed after the bulk action.", "other")
    assert restore_statuses(db, changed, "me") == (2, 1)
    assert [get_trace(db, i)["status"] for i in ids] == ["approved", "pending", "pending"]
