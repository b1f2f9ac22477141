"""Evaluation as a background job: progress in the store, cancel, resume, reconcile, refused arguments."""

import dataclasses
import os
import time
from pathlib import Path

import pytest

from ivt_core.config.evaluation import EvalConfig
from ivt_core.config.synthesis import SynthConfig
from ivt_core.errors import IVTError
from ivt_core.jobs import cancel, reconcile, resume, submit
from ivt_core.store.jobs import create_job, get_job
from ivt_core.store.runs import get_run


def _wait(workspace, job_id, statuses, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = get_job(workspace.connect(), job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']}: {open(job['log_path']).read()[-2000:]}")


@pytest.fixture
def job_ws(shapes_ws, tiny_models):
    return shapes_ws, EvalConfig(model=str(tiny_models["qwen3_vl"]), dataset="shapes", split="test", steps=1,
                                 max_new_tokens=4, batch_size=2)


def test_job_runs_to_done_with_progress_and_run(job_ws):
    workspace, args = job_ws
    job_id = submit(workspace, "eval", args)
    job = _wait(workspace, job_id, {"done", "failed"})
    assert job["status"] == "done" and job["progress_done"] == job["progress_total"] == 6
    run = workspace.connect().execute("SELECT id, status, n_samples, job_id FROM runs").fetchone()
    assert run[1:] == ("done", 6, job_id)


def test_cancel_then_resume_completes_the_same_run(job_ws):
    workspace, args = job_ws
    job_id = submit(workspace, "eval", dataclasses.replace(args, max_new_tokens=200, batch_size=1))
    _wait(workspace, job_id, {"running"})
    while get_job(workspace.connect(), job_id)["progress_done"] < 2:
        time.sleep(0.2)
    assert cancel(workspace, job_id) == "cancelling"
    assert _wait(workspace, job_id, {"cancelled", "failed"})["status"] == "cancelled"
    run_id = workspace.connect().execute("SELECT id FROM runs").fetchone()[0]
    partial = get_run(workspace.connect(), run_id)
    assert partial["status"] == "cancelled" and 2 <= partial["n_samples"] < 6
    new_job = resume(workspace, job_id)
    assert _wait(workspace, new_job, {"done", "failed"})["status"] == "done"
    run = get_run(workspace.connect(), run_id)
    assert run["status"] == "done" and run["n_samples"] == 6 and run["metrics"]["n"] == 6


def test_reconcile_marks_vanished_jobs_interrupted(workspace):
    db = workspace.connect()
    job_id = create_job(db, "eval", ["eval"], "x.log")
    db.execute("UPDATE jobs SET status = 'running', pid = 999999 WHERE id = ?", [job_id])
    assert reconcile(workspace) == [job_id]
    assert get_job(db, job_id)["status"] == "interrupted"


@pytest.mark.parametrize("kind,config", [
    ("shell", EvalConfig(dataset="shapes", split="val")),
    ("eval", ["--steps", "1"]),  # an argument list is not a config
    ("eval", EvalConfig(dataset="shapes", split="val", steps=-1)),
    ("eval", EvalConfig(dataset="shapes", split="val", steps=11)),
    ("eval", EvalConfig(dataset="nope", split="val")),
    ("eval", EvalConfig(model="x; rm -rf /", dataset="shapes", split="val")),
    ("synth", SynthConfig()),
    ("synth", EvalConfig(dataset="shapes", split="val")),
])
def test_refuses_what_the_program_would_not_run(workspace, kind, config):
    with pytest.raises(IVTError):
        submit(workspace, kind, config)
    assert workspace.connect().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_cli_job_flag_from_an_argument_list(job_ws, capsys):
    from ivt_core.cli import main

    workspace, args = job_ws
    flags = ["--model", args.model, "--dataset", "shapes", "--split", "test", "--steps", "1", "--max-new-tokens",
             "4", "--batch-size", "2"]
    assert main(["eval", "--workspace", str(workspace.root), *flags, "--job"]) == 0
    job_id = int(capsys.readouterr().out.strip())
    job = _wait(workspace, job_id, {"done", "failed"})
    assert job["status"] == "done" and "--workspace" not in job["argv"] and "--job" not in job["argv"]
    assert job["config"]["steps"] == 1 and job["config"]["max_new_tokens"] == 4  # the settings, stored


def test_a_queued_synthesis_starts_when_its_evaluation_is_done_and_reads_its_run(job_ws):
    workspace, args = job_ws
    first = submit(workspace, "eval", args)
    synth = submit(workspace, "synth", SynthConfig(run_of_job=first, include_zero=True, keep_ratio=1.0), after=first)
    queued = get_job(workspace.connect(), synth)
    assert queued["waits_for"] == first and queued["pid"] is None and queued["message"] == f"waits for job {first}"
    assert reconcile(workspace) == []  # a job waiting for another is not a vanished one
    assert _wait(workspace, first, {"done", "failed"})["status"] == "done"
    done = _wait(workspace, synth, {"done", "failed", "cancelled"})  # started by the evaluation as it ended
    assert done["status"] == "done", open(done["log_path"]).read()[-2000:]
    run_id = workspace.connect().execute("SELECT id FROM runs WHERE job_id = ?", [first]).fetchone()[0]
    assert f"run {run_id}, teacher geometric" in open(done["log_path"]).read()  # (the tiny random model's answers
    # are mostly unreadable, so how many traces it yields is not the point here)


def test_a_job_queued_behind_a_failed_one_is_cancelled_never_started(workspace):
    from ivt_core.jobs import start_ready

    db = workspace.connect()
    failed = create_job(db, "eval", ["eval"], "x.log")
    db.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", [failed])
    behind = submit(workspace, "synth", SynthConfig(run_of_job=failed), after=failed)
    job = get_job(db, behind)
    assert job["status"] == "cancelled" and job["pid"] is None and f"job {failed} ended failed" in job["message"]
    assert start_ready(workspace) == []
    waiting = create_job(db, "synth", ["--run", "1"], "y.log", waits_for=failed)
    assert cancel(workspace, waiting) == "cancelled"


def test_synthesis_from_a_job_that_wrote_no_run_says_so(workspace, capsys):
    from ivt_core.cli import main

    db = workspace.connect()
    job = create_job(db, "eval", ["eval"], "x.log")
    assert main(["synth", "--workspace", str(workspace.root), "--run-of-job", str(job)]) != 0
    assert f"job {job} wrote no run" in capsys.readouterr().err


def test_model_jobs_take_turns_and_a_turn_starts_however_the_one_ahead_ends(workspace):
    from ivt_core.jobs import start_ready, submit_in_turn

    db = workspace.connect()
    running = create_job(db, "eval", ["--steps", "0"], "x.log")
    db.execute("UPDATE jobs SET status = 'running', pid = ? WHERE id = ?", [os.getpid(), running])
    args = EvalConfig(dataset="shapes", split="val", steps=0, limit=1)
    second, ahead = submit_in_turn(workspace, "eval", args)
    assert ahead == running and get_job(db, second)["pid"] is None
    third, ahead = submit_in_turn(workspace, "eval", args)
    assert ahead == second  # behind the newest model job, queued or running
    synth, ahead = submit_in_turn(workspace, "synth", SynthConfig(run_of_job=running))
    assert ahead is None  # synthesis from the app loads no model: it does not wait
    cancel(workspace, synth)
    db.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", [running])
    assert start_ready(workspace) == [second]  # started although the job ahead failed
    assert get_job(db, third)["status"] == "queued"
    cancel(workspace, second)
    _wait(workspace, second, {"cancelled", "failed", "done"})
    start_ready(workspace)
    assert get_job(db, third)["pid"] is not None
    cancel(workspace, third)
    _wait(workspace, third, {"cancelled", "failed", "done"})


def test_resuming_an_older_job_of_a_chain_continues_its_run(workspace):
    from ivt_core.jobs import job_config
    from ivt_core.store.runs import create_run, link_run_to_job

    db = workspace.connect()
    first = create_job(db, "eval", ["--dataset", "shapes", "--split", "val"], "a.log",
                       config={"dataset": "shapes", "split": "val", "steps": 1})
    second = create_job(db, "eval", [], "b.log", resumed_from=first,
                        config={"dataset": "shapes", "split": "val", "steps": 1})
    db.execute("UPDATE jobs SET status = 'cancelled' WHERE id IN (?, ?)", [first, second])
    run_id = _a_run(db, create_run)
    link_run_to_job(db, run_id, second)  # the run moved to the newest job of the chain
    from ivt_core.jobs import resume_chain

    assert resume_chain(db, first) == [first, second]
    captured = {}
    import ivt_core.jobs as jobs_module

    original = jobs_module.submit
    try:
        jobs_module.submit = lambda ws, kind, config, **kw: captured.setdefault("config", config) and 0
        jobs_module.resume(workspace, first)
    finally:
        jobs_module.submit = original
    assert captured["config"].resume_run == run_id  # not a new run from zero
    assert job_config(workspace, get_job(db, first)).resume_run is None


def _a_run(db, create_run):
    from ivt_core.bootstrap import ensure_toy_model
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.workspace import Workspace

    root = Path(db.execute("PRAGMA database_list").fetchone()[2]).parent
    workspace = Workspace(root)
    write_shapes_split(workspace, "val", 2)
    model = ensure_toy_model(workspace)
    return create_run(db, model, "shapes", "val", 1, "fixed", "qwen3_vl", "v1", {}, {"steps": 1})


def test_a_live_but_silent_job_is_stalled_not_interrupted(workspace):
    db = workspace.connect()
    job_id = create_job(db, "eval", [], "x.log")
    db.execute("UPDATE jobs SET status = 'running', pid = ?, heartbeat_at = '2000-01-01T00:00:00+00:00' "
               "WHERE id = ?", [os.getpid(), job_id])
    assert reconcile(workspace) == []
    job = get_job(db, job_id)
    assert job["status"] == "running" and job["message"].startswith("stalled")


def test_paths_are_stored_absolute(shapes_ws, tiny_models, monkeypatch, tmp_path):
    from ivt_core.jobs import checked_config

    monkeypatch.chdir(tiny_models["qwen3_vl"].parent)
    config = checked_config(shapes_ws, "eval", EvalConfig(model=tiny_models["qwen3_vl"].name, dataset="shapes",
                                                          split="test"))
    assert config.model == str(tiny_models["qwen3_vl"].resolve())
