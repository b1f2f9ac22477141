"""``ivt eval --gpus N``: the samples are spread over worker processes and merged into one run equal to a
one-process run (CPU workers here; the GPU run is in docs/LOG.md)."""

import json

import pytest

from ivt_core.cli import main
from ivt_core.errors import InvalidInputError
from ivt_core.parallel_eval import check_gpus
from ivt_core.store.runs import get_run, load_trajectories


@pytest.fixture(scope="module")
def chatty_tiny(tmp_path_factory):
    from ivt_core.tinykit import TinySpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("chatty") / "m", "qwen3_vl", TinySpec(init_std=1.0))


def _eval(ws, model, capsys, *extra):
    code = main(["eval", "--workspace", str(ws.root), "--model", str(model), "--dataset", "shapes", "--split", "test",
                 "--steps", "1", "--max-new-tokens", "8", "--batch-size", "2", "--device", "cpu", "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_two_workers_give_the_one_process_run(chatty_tiny, shapes_ws, capsys):
    one = _eval(shapes_ws, chatty_tiny, capsys)
    two = _eval(shapes_ws, chatty_tiny, capsys, "--gpus", "2")
    db = shapes_ws.connect()
    assert get_run(db, two["run_id"])["status"] == "done"
    answers = [{t.sample_id: [s.raw_text for s in t.steps] for t in load_trajectories(db, run["run_id"])}
               for run in (one, two)]
    assert len(answers[1]) == 6 and answers[0] == answers[1]
    assert {k: v for k, v in one.items() if k != "run_id"} == {k: v for k, v in two.items() if k != "run_id"}
    logs = list((shapes_ws.root / "logs").glob(f"run{two['run_id']}-worker*.log"))
    assert len(logs) == 2


def test_gpus_checked_before_anything_starts():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the message of a machine without GPUs")
    with pytest.raises(InvalidInputError, match="no CUDA GPU; use --device cpu"):
        check_gpus(2, "cuda")
    with pytest.raises(InvalidInputError, match="at least 1"):
        check_gpus(0, "cpu")
