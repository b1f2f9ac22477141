"""A workspace made by the previous release (committed in tests/fixtures/workspace-0.5: made at 8815252 with
`ivt data shapes`, `ivt eval`, `ivt synth`, `ivt traces approve`, and two job rows) opens, upgrades in place
and loses nothing."""

import shutil
from pathlib import Path

import pytest

from ivt_core.config.evaluation import EvalConfig
from ivt_core.config.training import SFTConfig
from ivt_core.jobs import checked_config, job_config
from ivt_core.store.jobs import get_job
from ivt_core.store.migrations import MIGRATIONS, applied
from ivt_core.store.runs import get_run, load_trajectories
from ivt_core.store.traces import get_trace, list_traces
from ivt_core.workspace import Workspace

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "workspace-0.5"


@pytest.fixture
def old(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws")


def test_an_old_workspace_upgrades_in_place_without_loss(old):
    with old.connect() as db:
        assert applied(db) == [name for name, _ in MIGRATIONS]
        assert "_migrations" not in db.table_names()  # the old runner's record, adopted
        assert db["samples"].count == 24 and db["traces"].count == 6 and db["jobs"].count == 2
        run = get_run(db, 1)
        assert run["status"] == "done" and run["n_samples"] == 24 and run["metrics"]["n"] == 24
        assert len(load_trajectories(db, 1)) == 24
        assert get_trace(db, 1)["status"] == "approved" and get_trace(db, 1)["version"] == 2
        assert len(list_traces(db, limit=100)) == 6
    Workspace.open(old.root)  # a second open applies nothing and fails on nothing
    with old.connect() as db:
        assert applied(db) == [name for name, _ in MIGRATIONS]


def test_jobs_made_before_configs_are_read_from_their_arguments(old):
    with old.connect() as db:
        evaluation, training = get_job(db, 1), get_job(db, 2)
    assert evaluation["config"] is None
    config = job_config(old, evaluation)
    assert config == EvalConfig(dataset="mini", split="val", steps=1, limit=4, stop="fixed")
    checked_config(old, "eval", config)  # a resume would be accepted
    sft = job_config(old, training)
    assert isinstance(sft, SFTConfig) and sft.lr == 1e-4 and sft.epochs == 1 and sft.out.endswith("sft-job2")
