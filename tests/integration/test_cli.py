"""`ivt tiny-model` + `ivt data shapes` + `ivt eval --json`, end to end on CPU, and the error paths."""

import json

import pytest

from ivt_core.cli import main
from tests.integration.conftest import FAMILIES


def _eval(ws, model, *extra):
    return main(["eval", "--workspace", str(ws), "--model", str(model), "--dataset", "shapes", "--split", "test",
                 "--max-new-tokens", "8", *extra])


def _count(ws, table):
    from ivt_core.workspace import Workspace

    return Workspace.open(ws).connect().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and needle in err[-1] and err[-1].startswith("ivt"), err
    return err[-1]


@pytest.mark.parametrize("family", FAMILIES)
def test_end_to_end_each_family(tmp_path, capsys, family):
    model, ws = tmp_path / "model", tmp_path / "ws"
    assert main(["tiny-model", str(model), "--family", family]) == 0
    assert main(["data", "shapes", "--workspace", str(ws), "--split", "test", "--n", "5", "--seed", "0"]) == 0
    capsys.readouterr()
    assert _eval(ws, model, "--steps", "2", "--batch-size", "2", "--json") == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 5 and metrics["oracle"]["label"] == "oracle (uses ground truth)"
    assert set(metrics["policies"]) == {"fixed", "converged", "agree", "self"}
    assert {"step0", "final", "degradation", "outcomes", "parse_failure_rate", "per_step"} <= set(metrics)

    from ivt_core.workspace import Workspace

    db = Workspace.open(ws).connect()
    run = db.execute("SELECT status, steps, n_samples FROM runs").fetchone()
    assert run == ("done", 2, 5)
    rows = db.execute("SELECT step, raw_text, iou, parse_ok FROM steps ORDER BY trajectory_id, step").fetchall()
    assert [r[0] for r in rows] == [0, 1, 2] * 5
    assert all(isinstance(r[1], str) and 0.0 <= r[2] <= 1.0 for r in rows)


@pytest.fixture
def ready(tmp_path, tiny_models):
    ws = tmp_path / "ws"
    assert main(["data", "shapes", "--workspace", str(ws), "--split", "test", "--n", "4"]) == 0
    return ws, tiny_models["qwen3_vl"]


def test_text_summary_and_runs_listing(ready, capsys):
    ws, model = ready
    assert _eval(ws, model, "--steps", "1", "--limit", "2") == 0
    out = capsys.readouterr().out
    assert "step 0" in out and "oracle (uses ground truth)" in out and "stop: converged" in out
    assert main(["runs", "--workspace", str(ws)]) == 0
    assert f"   1  {model.name}  shapes/test" in capsys.readouterr().out  # which model made the run


def test_missing_image(ready, capsys):
    ws, model = ready
    next((ws / "images").rglob("*.png")).unlink()
    assert _eval(ws, model, "--steps", "1") == 2
    _one_line_error(capsys, "not found")
    assert _count(ws, "runs") == 0


def test_corrupt_image(ready, capsys):
    ws, model = ready
    next((ws / "images").rglob("*.png")).write_bytes(b"not a png")
    assert _eval(ws, model, "--steps", "1") == 2
    _one_line_error(capsys, "unreadable")
    assert _count(ws, "runs") == 0


def test_not_a_vlm(ready, capsys, tmp_path):
    ws, _ = ready
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    assert _eval(ws, tmp_path / "bert", "--steps", "1") == 2
    _one_line_error(capsys, "not a vision-language")
    assert _count(ws, "runs") == 0


def test_unknown_dataset(ready, capsys):
    ws, model = ready
    assert main(["eval", "--workspace", str(ws), "--model", str(model), "--dataset", "refcoco", "--split",
                 "test"]) == 2
    _one_line_error(capsys, "unknown dataset 'refcoco'")


def test_unknown_family(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["tiny-model", str(tmp_path / "m"), "--family", "llava"])
    assert exc.value.code == 2
    _one_line_error(capsys, "invalid choice")


def test_negative_steps(ready, capsys):
    ws, model = ready
    assert _eval(ws, model, "--steps", "-1") == 2
    _one_line_error(capsys, "steps must be between 0 and 10, got -1 (--steps)")
    assert _count(ws, "runs") == 0


def test_crash_mid_run_keeps_finished_batches_and_resumes(ready):
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig
    from ivt_core.store.runs import get_run
    from ivt_core.workspace import Workspace
    from tests.fakes import ScriptedGrounder

    ws, _ = ready
    workspace = Workspace.open(ws)
    request = EvalRequest("shapes", "test", LoopConfig(steps=0, batch_size=1))
    crashing = ScriptedGrounder(lambda t, s: "[0, 0, 10, 10]", fail_on_call=3)
    with pytest.raises(RuntimeError):
        evaluate(workspace, crashing, "/m", request)
    run = get_run(workspace.connect(), 1)
    assert run["status"] == "failed" and "model crashed" in run["error"] and run["n_samples"] == 2
    assert run["metrics"] is None
    result = evaluate(workspace, ScriptedGrounder(lambda t, s: "[0, 0, 10, 10]"), "/m", request, resume_run=1)
    run = get_run(workspace.connect(), result.run_id)
    assert result.run_id == 1 and run["status"] == "done" and run["n_samples"] == 4 and run["metrics"]["n"] == 4


def test_resuming_after_the_weights_changed_is_refused_and_keeps_the_run(ready, capsys, tmp_path):
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig
    from ivt_core.store.runs import get_run
    from ivt_core.workspace import Workspace
    from tests.fakes import ScriptedGrounder

    ws, _ = ready
    checkpoint = tmp_path / "retrained"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"first weights" * 1000)
    workspace = Workspace.open(ws)
    request = EvalRequest("shapes", "test", LoopConfig(steps=0, batch_size=1))
    with pytest.raises(RuntimeError):
        evaluate(workspace, ScriptedGrounder(lambda t, s: "[0, 0, 10, 10]", fail_on_call=3), checkpoint, request)
    (checkpoint / "model.safetensors").write_bytes(b"other weights" * 1000)  # retrained into the same folder
    assert main(["eval", "--workspace", str(ws), "--resume-run", "1"]) == 2
    _one_line_error(capsys, f"cannot resume run 1: the weights at {checkpoint} changed since model 1")
    run = get_run(workspace.connect(), 1)
    assert run["status"] == "failed" and run["n_samples"] == 2


def test_scripted_run_metrics_are_stored(ready):
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig
    from ivt_core.store.runs import get_run
    from ivt_core.workspace import Workspace
    from tests.fakes import ScriptedGrounder

    ws, _ = ready
    workspace = Workspace.open(ws)
    result = evaluate(workspace, ScriptedGrounder(lambda t, s: "[0, 0, 1000, 1000]"), "/m",
                      EvalRequest("shapes", "test", LoopConfig(steps=1)))
    run = get_run(workspace.connect(), result.run_id)
    assert run["status"] == "done" and run["metrics"]["n"] == 4 and run["render_style"]["version"] == "render-v1"
    assert 0 < run["metrics"]["step0"]["miou"] < 0.2  # a whole-image box covers little of one shape


def test_eval_without_model_uses_toy_model_and_creates_default_splits(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["eval", "--workspace", str(ws), "--dataset", "shapes", "--split", "val", "--steps", "0",
                 "--limit", "8", "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["n"] == 8 and metrics["parse_failure_rate"] == 0.0
    assert "generated the default shapes-world splits" in captured.err
    assert _count(ws, "samples") == 1700  # train 1,000, val 200, test 500


def test_a_shapes_run_draws_outlines_and_says_so(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["data", "shapes", "--workspace", str(ws), "--split", "val", "--n", "3", "--name", "mini"]) == 0
    assert main(["eval", "--workspace", str(ws), "--dataset", "mini", "--split", "val", "--steps", "1"]) == 0
    from ivt_core.render import OUTLINE_COLOR
    from ivt_core.store.runs import get_run
    from ivt_core.workspace import Workspace

    with Workspace.open(ws).connect() as db:
        style = get_run(db, 1)["render_style"]
    assert tuple(style["color"]) == OUTLINE_COLOR and style["fill_alpha"] == 0.0
    capsys.readouterr()
    assert main(["report", "1", "--workspace", str(ws)]) == 0
    assert "box drawn as outline rgb(0, 220, 220) 3 px, no fill" in capsys.readouterr().out


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    from ivt_core.store.jobs import create_job
    from ivt_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    with ws.connect() as db:
        for _ in range(3000):  # far more than a pipe buffers
            create_job(db, "eval", ["--dataset", "shapes", "--split", "val", "--steps", "2"], "x.log")
        db.execute("UPDATE jobs SET status = 'done'")
    done = subprocess.run(f"{sys.executable} -m ivt_core.cli jobs list --workspace {ws.root} | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() and done.stderr == ""


def test_empty_lists_say_so(tmp_path, capsys):
    from ivt_core.workspace import Workspace

    Workspace.open(tmp_path / "ws")  # a workspace with nothing in it yet
    assert main(["jobs", "list", "--workspace", str(tmp_path / "ws")]) == 0
    assert main(["runs", "--workspace", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    assert "no jobs in this workspace yet" in out and "no runs in this workspace yet" in out


@pytest.mark.parametrize("command", [["report", "1"], ["compare", "1", "2"], ["paper-table", "1"], ["runs"],
                                     ["data", "list"], ["jobs", "list"], ["verifier", "1"]])
def test_reading_a_mistyped_workspace_says_so_and_creates_nothing(tmp_path, capsys, command):
    """A command that reads a workspace's runs, datasets or jobs does not make an empty workspace where a typo
    points (and then report "no run with id 1"): one line naming the path, exit code 2."""
    typo = tmp_path / "worksapce"
    assert main([*command, "--workspace", str(typo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no workspace at {typo}" in err[0]
    assert not typo.exists()
