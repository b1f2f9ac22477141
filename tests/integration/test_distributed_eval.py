"""Evaluation under accelerate: ``ivt eval --gpus N`` (CPU processes here) and ``accelerate launch -m ivt_core.cli
eval`` give the run one process gives; a resumed launch keeps what an earlier one stored, shard files included.
The GPU run is in docs/LOG.md."""

import json
import subprocess
import sys

import pytest

from ivt_core.cli import main
from ivt_core.distributed_eval import _read_shard, check_gpus, shard_dir
from ivt_core.errors import InvalidInputError
from ivt_core.records import trajectory_from_dict, trajectory_to_dict
from ivt_core.store.runs import add_trajectories, get_run, load_trajectories


@pytest.fixture(scope="module")
def chatty_tiny(tmp_path_factory):
    from ivt_core.tinykit import TinySpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("chatty") / "m", "qwen3_vl", TinySpec(init_std=1.0))


ARGS = ["--steps", "1", "--max-new-tokens", "8", "--batch-size", "2", "--device", "cpu", "--json"]


def _eval(ws, model, capsys, *extra):
    code = main(["eval", "--workspace", str(ws.root), "--model", str(model), "--dataset", "shapes", "--split", "test",
                 *ARGS, *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _answers(db, run_id):
    return {t.sample_id: [s.raw_text for s in t.steps] for t in load_trajectories(db, run_id)}


def test_two_processes_give_the_one_process_run(chatty_tiny, shapes_ws, capsys):
    one = _eval(shapes_ws, chatty_tiny, capsys)
    two = _eval(shapes_ws, chatty_tiny, capsys, "--gpus", "2")
    db = shapes_ws.connect()
    assert get_run(db, two["run_id"])["status"] == "done"
    answers = _answers(db, one["run_id"])
    assert len(answers) == 6 and _answers(db, two["run_id"]) == answers
    assert {k: v for k, v in one.items() if k != "run_id"} == {k: v for k, v in two.items() if k != "run_id"}
    log = (shapes_ws.root / "logs" / f"run{two['run_id']}-accelerate.log").read_text()
    assert "eval rank 0" in log and "eval rank 1" in log  # two ranks did the work
    assert not shard_dir(shapes_ws, two["run_id"]).exists()  # merged into the store, then removed


def test_a_launch_resumes_a_run_with_what_the_store_and_shard_files_hold(chatty_tiny, shapes_ws, capsys):
    from ivt_core.distributed_eval import launch_command
    from ivt_core.evaluate import start_run
    from ivt_core.grounders.transformers_grounder import describe_model

    one = _eval(shapes_ws, chatty_tiny, capsys)
    db = shapes_ws.connect()
    done = load_trajectories(db, one["run_id"])
    run = get_run(db, one["run_id"])
    from ivt_core.cli.evaluation import _request_from_run

    request = _request_from_run(shapes_ws, one["run_id"])[0]
    name, family = describe_model(chatty_tiny)
    run_id = start_run(db, name, family, chatty_tiny, request)
    add_trajectories(db, run_id, done[:1])  # what rank 0 stored before the launch stopped
    left = trajectory_to_dict(done[1])
    left["steps"][0]["raw_text"] += " (from the shard file)"  # to see that it is kept, not computed again
    shard = shard_dir(shapes_ws, run_id) / "rank1.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text(json.dumps(left) + "\n" + '{"sample_id": "cut by a cra')  # a last line cut by a crash

    command = launch_command(shapes_ws, run_id, 2, "cpu", False) + ["--json"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    printed = json.loads(finished.stdout.strip().splitlines()[-1])  # rank 0 prints the run, the others nothing
    assert printed["run_id"] == run_id and get_run(db, run_id)["status"] == "done"
    assert "eval rank 1" in finished.stderr
    expected = _answers(db, one["run_id"])
    expected[done[1].sample_id][0] += " (from the shard file)"
    assert _answers(db, run_id) == expected
    assert run["metrics"]["n"] == printed["n"] == 6
    assert not shard_dir(shapes_ws, run_id).exists()


def test_a_shard_file_round_trips_and_drops_a_cut_line(tmp_path, chatty_tiny, shapes_ws, capsys):
    one = _eval(shapes_ws, chatty_tiny, capsys)
    trajectories = load_trajectories(shapes_ws.connect(), one["run_id"])
    assert [trajectory_from_dict(trajectory_to_dict(t)) for t in trajectories] == trajectories
    path = tmp_path / "rank1.jsonl"
    path.write_text("".join(json.dumps(trajectory_to_dict(t)) + "\n" for t in trajectories[:2]) + '{"sample')
    assert _read_shard(path) == trajectories[:2]


def test_gpus_checked_before_anything_starts():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the message of a machine without GPUs")
    with pytest.raises(InvalidInputError, match="no CUDA GPU; use --device cpu"):
        check_gpus(2, "cuda")
    with pytest.raises(InvalidInputError, match="at least 1"):
        check_gpus(0, "cpu")


def test_the_launch_is_an_argument_list(shapes_ws):
    from ivt_core.distributed_eval import launch_command

    first, second = launch_command(shapes_ws, 3, 2, "cpu", False), launch_command(shapes_ws, 3, 2, "cpu", True)
    assert first[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert first[first.index("--resume-run") + 1] == "3" and second[-1] == "--4bit"


def test_a_cancelled_launch_stops_its_ranks_and_resumes(chatty_tiny, shapes_ws, capsys):
    from ivt_core.cli.evaluation import _request_from_run
    from ivt_core.distributed_eval import evaluate_launched
    from ivt_core.errors import JobCancelled

    one = _eval(shapes_ws, chatty_tiny, capsys)
    request = _request_from_run(shapes_ws, one["run_id"])[0]

    def cancel(n):  # the user presses Cancel as soon as the first answers are written
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        evaluate_launched(shapes_ws, chatty_tiny, request, 2, device="cpu", progress=cancel)
    db = shapes_ws.connect()
    run_id = max(r["id"] for r in db.query("SELECT id FROM runs"))
    assert get_run(db, run_id)["status"] == "cancelled"
    ranks = subprocess.run(["pgrep", "-f", f"ivt_core.cli eval .*resume-run {run_id} "], capture_output=True)
    assert ranks.returncode == 1, ranks  # no process left: the launch and its ranks are gone
    resumed = _eval(shapes_ws, chatty_tiny, capsys, "--resume-run", str(run_id), "--gpus", "2")
    assert resumed["run_id"] == run_id and _answers(db, run_id) == _answers(db, one["run_id"])
