"""Synthesis from a run's errors, review with revisions and conflicts, export -> import round trip."""

import json

import pytest

from ivt_core.boxes import Box, iou
from ivt_core.cli import main
from ivt_core.data.sample import load_image
from ivt_core.evaluate import EvalRequest, evaluate
from ivt_core.loop import LoopConfig
from ivt_core.store.traces import TraceConflict, count_traces, get_trace, list_traces, revisions
from ivt_core.teachers.geometric import GeometricTeacher
from ivt_core.trace_export import export_traces, import_traces
from ivt_core.traces import SynthConfig, approve, bulk, edit_box, edit_reasoning, reject, synthesize, trace_images
from tests.fakes import ScriptedGrounder


@pytest.fixture
def run(shapes_ws):
    """A run whose step-0 boxes are the ground truth shifted right by 40 % of its width (so 0 < IoU < 0.85),
    except the first sample, answered exactly (IoU ~1: a keep candidate)."""
    from ivt_core.store.samples import get_samples

    samples = get_samples(shapes_ws.connect(), "shapes", "test")
    gt = {load_image(shapes_ws.resolve(s.image_path)).tobytes(): (i, s.bbox) for i, s in enumerate(samples)}

    def answer(text, step, conversation):
        i, b = gt[conversation[0]["content"][0]["image"].tobytes()]
        shift = 0 if i == 0 else 0.4 * b.width
        return json.dumps({"bbox_2d": [round((v + (shift if k % 2 == 0 else 0)) / 0.224) for k, v in
                                       enumerate(b.to_xyxy())]})

    result = evaluate(shapes_ws, ScriptedGrounder(answer, with_conversation=True), "/m",
                      EvalRequest("shapes", "test", LoopConfig(steps=0)))
    return shapes_ws, result.run_id


def test_synthesis_targets_end_at_ground_truth_and_images_show_the_boxes(run):
    workspace, run_id = run
    counts = synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=3, keep_ratio=1.0))
    assert counts["corrective"] == 5 and counts["keep"] == 1 and counts["created"] == 6
    db = workspace.connect()
    for trace in list_traces(db, kind="corrective"):
        from ivt_core.store.samples import get_sample

        sample = get_sample(db, trace["sample_id"])
        assert trace["status"] == "pending" and len(trace["steps"]) == 3
        assert Box(*trace["steps"][-1]["box"]) == sample.bbox and trace["final_iou"] == 1.0
        ious = [s["iou"] for s in trace["steps"]]
        assert trace["student_iou"] < ious[0] < ious[1] < ious[2]
        paths = trace_images(workspace, trace, sample)
        assert len(paths) == 4
        shown = load_image(paths[1])
        x1, y1, x2, y2 = (round(v) for v in trace["student_box"])
        assert shown.getpixel((x1 + 1, (y1 + y2) // 2)) == (255, 0, 0)  # the student's box, drawn in red
    keep = list_traces(db, kind="keep")[0]
    assert "The box is correct." in keep["steps"][0]["reasoning"]
    again = synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=3, keep_ratio=1.0))
    assert again["created"] == 0 and again["existing"] == 6


def test_minimal_style_with_a_confirming_step(run):
    workspace, run_id = run
    teacher = GeometricTeacher(style="minimal")
    counts = synthesize(workspace, run_id, teacher, SynthConfig(steps=1, keep_ratio=1.0, confirm=True))
    assert counts["created"] == 6 and teacher.name == "geometric-minimal"
    db = workspace.connect()
    for trace in list_traces(db, kind="corrective"):
        from ivt_core.store.samples import get_sample

        gt = get_sample(db, trace["sample_id"]).bbox
        first, confirm = trace["steps"]  # one corrective step, then the confirmation
        assert first["reasoning"] == "Edges off."  # shifted by 40 %: still on the target shape
        assert Box(*first["box"]) == gt and Box(*confirm["box"]) == gt
        assert confirm["reasoning"] == "The box is correct." and confirm["iou"] == 1.0
    (keep,) = list_traces(db, kind="keep")
    assert [s["reasoning"] for s in keep["steps"]] == ["The box is correct."] * 2
    assert keep["steps"][0]["box"] == keep["steps"][1]["box"] == keep["student_box"]


def test_review_versions_history_and_conflict(run):
    workspace, run_id = run
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2))
    db = workspace.connect()
    trace = list_traces(db)[0]
    first = edit_reasoning(db, trace["id"], 1, 1, "The box is too far right; move it left.", "alice")
    with pytest.raises(TraceConflict, match="reload"):
        edit_reasoning(db, trace["id"], 1, 1, "Bob's words", "bob")  # bob read version 1 too
    current = get_trace(db, trace["id"])
    assert current["steps"][0]["reasoning"] == "The box is too far right; move it left." and current["version"] == 2
    v3 = edit_box(db, trace["id"], first, 2, [1, 1, 20, 20], "alice")
    assert get_trace(db, trace["id"])["final_iou"] == pytest.approx(iou(Box(1, 1, 20, 20),
                                                                          Box(*trace["steps"][-1]["box"])))
    approve(db, trace["id"], v3, "carol")
    history = revisions(db, trace["id"])
    assert [(r["version"], r["action"], r["reviewer"]) for r in history] == [
        (1, "create", "teacher:geometric"), (2, "edit_text", "alice"), (3, "edit_box", "alice"),
        (4, "approve", "carol")]
    assert history[2]["diff"]["box"][1] == [1.0, 1.0, 20.0, 20.0]
    with pytest.raises(Exception, match="outside"):
        edit_box(db, trace["id"], 4, 1, [0, 0, 900, 900], "alice")


def test_counts_filters_search_and_bulk(run):
    workspace, run_id = run
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=1))
    db = workspace.connect()
    ids = [t["id"] for t in list_traces(db)]
    reject(db, ids[0], 1, "r")
    assert count_traces(db) == {"pending": 4, "approved": 0, "rejected": 1}
    word = list_traces(db)[1]["steps"][0]["reasoning"].split()[2].strip(".,;")
    assert list_traces(db, search=word)
    assert bulk(db, ids[1:], "approve", "r") == {"done": 4, "conflicts": []}
    assert count_traces(db)["approved"] == 4


def test_export_import_round_trip_exactly(run, tmp_path):
    workspace, run_id = run
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2))
    db = workspace.connect()
    for t in list_traces(db)[:3]:
        approve(db, t["id"], t["version"], "r")
    out = tmp_path / "out" / "traces.jsonl"
    assert export_traces(workspace, out, images_dir=str(tmp_path / "out" / "images")) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    first = lines[0]
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert [m.get("train") for m in first["messages"] if m["role"] == "assistant"] == [False, True, True]
    assert len(first["images"]) == 3 and all((out.parent / p).is_file() for p in first["images"])
    assert sum(part["type"] == "image" for m in first["messages"] for part in m["content"]) == 3
    assert '"bbox_2d"' in first["messages"][-1]["content"][0]["text"]

    from ivt_core.workspace import Workspace

    fresh = Workspace.open(tmp_path / "fresh")
    assert import_traces(fresh, out) == {"created": 3, "skipped_duplicates": 0}
    assert import_traces(fresh, out)["skipped_duplicates"] == 3
    original = {t["sample_id"]: t for t in list_traces(db, status="approved")}
    for t in list_traces(fresh.connect()):
        o = original[t["sample_id"]]
        assert (t["steps"], t["student_box"], t["student_text"], t["status"]) == (
            o["steps"], o["student_box"], o["student_text"], "approved")
    re_export = tmp_path / "again.jsonl"
    export_traces(fresh, re_export)
    again = [json.loads(line) for line in re_export.read_text().splitlines()]
    assert [r["messages"] for r in again] == [r["messages"] for r in lines]


def test_llamafactory_style(run, tmp_path):
    workspace, run_id = run
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=1))
    out = tmp_path / "lf.jsonl"
    assert export_traces(workspace, out, status="pending", style="llamafactory") == 5
    record = json.loads(out.read_text().splitlines()[0])
    assert record["messages"][0]["content"].startswith("<image>") and len(record["images"]) == 2


def test_cli_synth_review_export(run, tmp_path, capsys):
    workspace, run_id = run
    ws = str(workspace.root)
    assert main(["synth", "--workspace", ws, "--run", str(run_id), "--steps", "2"]) == 0
    assert main(["traces", "approve", "1", "2", "--workspace", ws]) == 0
    assert main(["traces", "approve", "1", "--version", "1", "--workspace", ws]) == 2  # stale version
    assert "was changed" in capsys.readouterr().err
    assert main(["traces", "reject", "--all-matching", "--workspace", ws]) == 0
    assert main(["traces", "list", "--workspace", ws]) == 0
    assert "approved: 2  rejected: 3" in capsys.readouterr().out
    assert main(["traces", "export", "--out", str(tmp_path / "t.jsonl"), "--workspace", ws]) == 0
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 2
    assert main(["synth", "--workspace", ws, "--run", "99"]) == 2


def test_exported_file_feeds_the_sft_example_builder(run, tmp_path, tiny_models):
    from ivt_core.grounders.processing import load_processor
    from ivt_core.supervision import IGNORE, build_example
    from ivt_core.trace_export import record_to_conversation

    workspace, run_id = run
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2))
    out = tmp_path / "t.jsonl"
    export_traces(workspace, out, status="pending", images_dir=str(tmp_path / "img"))
    record = json.loads(out.read_text().splitlines()[0])
    conversation, train = record_to_conversation(record, out.parent)
    assert train == {3, 5}
    processor = load_processor(tiny_models["qwen3_vl"], "qwen3_vl")
    example = build_example(processor, conversation, train)
    trained = processor.tokenizer.decode(example["input_ids"][example["labels"] != IGNORE])
    assert record["messages"][3]["content"][0]["text"] in trained and record["messages"][1]["content"][0][
        "text"] not in trained
    assert example["image_grid_thw"].shape[0] == 3


def test_traces_keep_and_draw_in_the_render_style_of_their_run(run):
    from ivt_core.render import OUTLINE_COLOR, RENDER_STYLES
    from ivt_core.store.samples import get_sample

    workspace, run_id = run
    db = workspace.connect()
    db.execute("UPDATE runs SET render_style = ? WHERE id = ?", [json.dumps(RENDER_STYLES["outline"].to_dict()),
                                                                 run_id])
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2))
    trace = list_traces(db, kind="corrective")[0]
    assert tuple(trace["meta"]["render"]["color"]) == OUTLINE_COLOR
    shown = load_image(trace_images(workspace, trace, get_sample(db, trace["sample_id"]))[1])
    x1, y1, x2, y2 = (round(v) for v in trace["student_box"])
    assert shown.getpixel((x1 + 1, (y1 + y2) // 2)) == OUTLINE_COLOR


def test_a_box_on_another_object_jumps_to_the_right_one(shapes_ws):
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig

    def far_away(text, step, conversation):  # every step-0 box in a corner, away from the object (IoU 0)
        return '{"bbox_2d": [0, 0, 40, 40]}'

    result = evaluate(shapes_ws, ScriptedGrounder(far_away, with_conversation=True), "/m",
                      EvalRequest("shapes", "test", LoopConfig(steps=0)))
    synthesize(shapes_ws, result.run_id, GeometricTeacher(), SynthConfig(steps=3, include_zero=True))
    traces = list_traces(shapes_ws.connect(), kind="corrective")
    assert traces and all(t["student_iou"] == 0.0 for t in traces)
    for trace in traces:  # no interpolated targets over empty background: the first step is the ground truth
        assert [s["iou"] for s in trace["steps"]] == [1.0, 1.0, 1.0]


def test_the_keep_mix_can_follow_the_models_own(run):
    workspace, run_id = run  # 5 corrective samples, 1 right one
    counts = synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=1, keep_ratio=-1))
    assert counts["corrective"] == 5 and counts["keep"] == 1


def test_counterfactual_traces_draw_the_truth_or_another_object_as_if_answered(run, tiny_models):
    from ivt_core.grounders.processing import load_processor
    from ivt_core.store.samples import get_sample
    from ivt_core.supervision import IGNORE
    from training.sft import TraceDataset

    workspace, run_id = run
    config = SynthConfig(steps=1, style="minimal", confirm=True, counterfactual=1.0)
    counts = synthesize(workspace, run_id, GeometricTeacher(style="minimal"), config)
    db = workspace.connect()
    made = [t for t in list_traces(db) if t["origin"] == "counterfactual"]
    assert counts["counterfactual"] == len(made) >= 4 and {t["kind"] for t in made} == {"keep", "corrective"}
    for trace in made:
        sample = get_sample(db, trace["sample_id"])
        drawn = Box(*trace["student_box"])
        objects = [Box(*o["box"]) for o in sample.meta["objects"]]
        assert trace["teacher"] == "geometric-minimal-counterfactual"
        assert any(iou(drawn, o) > 0.999 for o in objects)  # an object's box, written as the model's answer
        assert json.loads(trace["student_text"])["bbox_2d"] == [round(v / 0.224) for v in drawn.to_xyxy()]
        assert trace["steps"][-1]["iou"] == pytest.approx(1.0)
        if trace["kind"] == "keep":
            assert trace["student_iou"] == pytest.approx(1.0) and trace["steps"][0]["reasoning"] == \
                "The box is correct."
        else:
            assert trace["student_iou"] < 0.5 and trace["steps"][0]["reasoning"].startswith("Wrong")
    again = synthesize(workspace, run_id, GeometricTeacher(style="minimal"), config)
    assert again["created"] == 0  # idempotent, counterfactual ones included

    # SFT's step-0 self-distillation trains the model's own first answers, never a counterfactual one
    out = workspace.root / "export.jsonl"
    export_traces(workspace, out, status="pending")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    processor = load_processor(tiny_models["qwen3_vl"], "qwen3_vl")
    dataset = TraceDataset(records, out.parent, processor, train_step0=True)
    for i, record in enumerate(records):
        trained = processor.tokenizer.decode(dataset[i]["input_ids"][dataset[i]["labels"] != IGNORE])
        first = record["ivt"]["student_text"]
        assert trained.startswith(first) == (record["ivt"]["origin"] != "counterfactual")
