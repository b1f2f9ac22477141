"""New weights at a registered path are a new model; runs of the old weights keep theirs (issue 15's shipped toys
replaced in place; a checkpoint retrained into the same folder)."""

import os
import random
import shutil
import sqlite3

import pytest

from ivt_core.errors import InvalidInputError
from ivt_core.evaluate import refuse_changed_weights
from ivt_core.fingerprint import weights_fingerprint
from ivt_core.store import connect
from ivt_core.store.migrations import MIGRATIONS, _statements
from ivt_core.store.models import get_model, register_model, weights_changed
from ivt_core.store.runs import create_run, get_run
from ivt_core.store.samples import upsert_dataset


def _checkpoint(folder, seed: int, size: int = 3_000_000):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "toy"}')
    (folder / "model.safetensors").write_bytes(random.Random(seed).randbytes(size))
    return str(folder)


def test_fingerprint_follows_the_weights_not_the_folder(tmp_path):
    a = _checkpoint(tmp_path / "a", seed=1)
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    assert weights_fingerprint(a) == weights_fingerprint(str(copy)) != ""
    assert weights_fingerprint(_checkpoint(tmp_path / "a", seed=2)) != weights_fingerprint(str(copy))
    (copy / "config.json").write_text('{"model_type": "other"}')
    assert weights_fingerprint(str(copy)) != weights_fingerprint(_checkpoint(tmp_path / "b", seed=1))
    assert weights_fingerprint("http://gpu-box:8000/v1") == ""
    assert weights_fingerprint(str(tmp_path / "missing")) == ""
    adapter = _checkpoint(tmp_path / "adapter", seed=3, size=1000)
    assert weights_fingerprint(a, adapter) != weights_fingerprint(a)


def test_new_weights_at_a_registered_path_are_a_new_model(db, tmp_path):
    path = _checkpoint(tmp_path / "m", seed=1)
    first = register_model(db, "m", path, "qwen3_vl")
    assert register_model(db, "m", path, "qwen3_vl") == first
    upsert_dataset(db, "d", "test", {})
    run = create_run(db, first, "d", "test", 0, "fixed", "qwen3_vl", "v1", {}, {})

    _checkpoint(tmp_path / "m", seed=2)  # retrained into the same folder
    assert weights_changed(db, first).startswith(f"the weights at {path} changed since model {first} (m)")
    second = register_model(db, "m", path, "qwen3_vl")
    assert second != first and register_model(db, "m", path, "qwen3_vl") == second
    old = get_model(db, first)
    assert old["name"] == f"m (weights of {old['created_at'][:10]})" and get_model(db, second)["name"] == "m"
    assert get_run(db, run)["model_id"] == first and weights_changed(db, second) == ""

    _checkpoint(tmp_path / "m", seed=1)  # the first weights back: their model, not a third one
    assert register_model(db, "m", path, "qwen3_vl") == first
    assert get_model(db, first)["name"] == old["name"] and weights_changed(db, first) == ""
    second_row = get_model(db, second)
    assert second_row["name"].startswith("m (weights of ") and second_row["meta"]["weights_now_model"] == first
    assert weights_changed(db, second).endswith(f"changed since model {second} ({second_row['name']}) was "
                                                f"registered (they are model {first} now)")


def test_a_registration_from_before_fingerprints(db, tmp_path):
    def legacy(path, created_at):
        return db.execute("INSERT INTO models (name, base_path, family, created_at) VALUES ('old', ?, 'f', ?)",
                          [path, created_at]).lastrowid

    kept = _checkpoint(tmp_path / "kept", seed=1)
    os.utime(tmp_path / "kept" / "model.safetensors", (1e9, 1e9))  # 2001: older than the registration
    os.utime(tmp_path / "kept" / "config.json", (1e9, 1e9))
    old = legacy(kept, "2026-01-01T00:00:00+00:00")
    assert register_model(db, "old", kept, "f") == old
    assert get_model(db, old)["fingerprint"] == weights_fingerprint(kept)

    replaced = _checkpoint(tmp_path / "replaced", seed=1)  # written now, after a registration in January
    old = legacy(replaced, "2026-01-01T00:00:00+00:00")
    new = register_model(db, "old", replaced, "f")
    assert new != old and get_model(db, old)["name"] == "old (weights of 2026-01-01)"
    assert weights_changed(db, old).endswith(f"(they are model {new} now)")  # known although never fingerprinted


def test_resuming_a_run_whose_weights_changed_is_refused(db, tmp_path):
    path = _checkpoint(tmp_path / "m", seed=1)
    upsert_dataset(db, "d", "test", {})
    run = get_run(db, create_run(db, register_model(db, "m", path, "f"), "d", "test", 0, "fixed", "f", "v1", {},
                                 {}))
    refuse_changed_weights(db, run)  # unchanged: nothing to say
    _checkpoint(tmp_path / "m", seed=2)
    with pytest.raises(InvalidInputError, match=f"cannot resume run {run['id']}: the weights at .* changed .*"
                                                "start a new run with these weights"):
        refuse_changed_weights(db, run)


def test_a_workspace_from_before_the_fingerprint_upgrades_in_place(tmp_path):
    path = tmp_path / "ivt.db"
    raw = sqlite3.connect(path)
    for _, sql in MIGRATIONS[:7]:
        for statement in _statements(sql):
            raw.execute(statement)
    raw.execute("CREATE TABLE _migrations (id INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)")
    raw.executemany("INSERT INTO _migrations (name, applied_at) VALUES (?, '2026-12-01')",
                    [(name,) for name, _ in MIGRATIONS[:7]])
    raw.execute("INSERT INTO datasets (name, kind, created_at) VALUES ('d', 'test', 'now')")
    raw.execute("INSERT INTO models (id, name, base_path, family, created_at) VALUES (1, 'base', '/b', 'f', 'x')")
    raw.execute("INSERT INTO models (id, name, base_path, family, parent_id, created_at) "
                "VALUES (2, 'sft', '/s', 'f', 1, 'x')")
    raw.execute("INSERT INTO runs (id, model_id, dataset, split, steps, policy, prompt_family, prompt_version, "
                "render_style, status, created_at) "
                "VALUES (7, 2, 'd', 'test', 2, 'fixed', 'f', 'v1', '{}', 'done', 'x')")
    raw.commit()
    raw.close()
    db = connect(path)
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert [(m["id"], m["name"], m["parent_id"], m["fingerprint"]) for m in db.query("SELECT * FROM models")] == [
        (1, "base", None, ""), (2, "sft", 1, "")]
    assert get_run(db, 7)["model_id"] == 2
    with pytest.raises(sqlite3.IntegrityError):  # the foreign keys still hold after the table was made again
        db.execute("INSERT INTO models (name, base_path, family, parent_id, created_at) "
                   "VALUES ('x', '/x', 'f', 99, 'x')")
