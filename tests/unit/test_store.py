import sqlite3

import pytest

from ivt_core.boxes import Box
from ivt_core.data.sample import Sample
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.store import connect
from ivt_core.store.migrations import MIGRATIONS, applied
from ivt_core.store.models import register_model
from ivt_core.store.runs import add_trajectories, create_run, delete_run, get_run, load_trajectories
from ivt_core.store.samples import get_samples, upsert_dataset, upsert_samples
from tests.helpers import traj


def _sample(i, split="test"):
    return Sample(f"s{i}", "d", split, f"images/{i}.png", 10, 10, "the thing", Box(1, 2, 3, 4), "src", {"k": i})


def test_migrations_applied_once(db, workspace):
    assert applied(db) == [name for name, _ in MIGRATIONS]
    again = connect(workspace.db_path)
    assert applied(again) == [name for name, _ in MIGRATIONS]


def test_pragmas(db):
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 10000


def test_samples_round_trip_and_idempotent(db):
    upsert_dataset(db, "d", "test", {})
    upsert_samples(db, [_sample(1), _sample(2)])
    upsert_samples(db, [_sample(1)])
    got = get_samples(db, "d", "test")
    assert [s.id for s in got] == ["s1", "s2"] and got[0].bbox == Box(1, 2, 3, 4) and got[0].meta == {"k": 1}


def test_unknown_dataset_and_empty_split(db):
    with pytest.raises(NotFoundError, match="unknown dataset"):
        get_samples(db, "nope", "test")
    upsert_dataset(db, "d", "test", {})
    upsert_samples(db, [_sample(1)])
    with pytest.raises(NotFoundError, match="no samples in split 'train'"):
        get_samples(db, "d", "train")


def test_model_registration_is_idempotent(db):
    assert register_model(db, "m", "/x", "qwen3_vl") == register_model(db, "m", "/x", "qwen3_vl")


def test_run_round_trip_and_cascade_delete(db):
    upsert_dataset(db, "d", "test", {})
    upsert_samples(db, [_sample(1)])
    model = register_model(db, "m", "/x", "qwen3_vl")
    run = create_run(db, model, "d", "test", 2, "fixed", "qwen3_vl", "v1", {}, {})
    t = traj([0.2, 0.5, 0.4])
    t.sample_id = "s1"
    t.steps[1].own_text = "It is on the small red square. Wrong colour."  # what a derived verdict replaced
    add_trajectories(db, run, [t])
    loaded = load_trajectories(db, run)
    assert loaded[0].ious == [0.2, 0.5, 0.4] and loaded[0].steps[1].box == Box(0, 0, 10, 10)
    assert [s.own_text for s in loaded[0].steps] == ["", t.steps[1].own_text, ""]
    assert get_run(db, run)["n_samples"] == 1
    delete_run(db, run)
    assert db.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 0
    with pytest.raises(NotFoundError):
        get_run(db, run)


def test_not_a_database(tmp_path):
    bad = tmp_path / "ivt.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InvalidInputError, match="not a usable"):
        connect(bad)


def test_duplicate_trajectory_rejected_atomically(db):
    upsert_dataset(db, "d", "test", {})
    upsert_samples(db, [_sample(1)])
    run = create_run(db, register_model(db, "m", "/x", "f"), "d", "test", 0, "fixed", "f", "v1", {}, {})
    t = traj([0.2])
    t.sample_id = "s1"
    with pytest.raises(sqlite3.IntegrityError):
        add_trajectories(db, run, [t, t])
    assert db.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0] == 0
