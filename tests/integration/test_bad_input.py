"""Bad input, table-driven: every case is refused with one line naming what to fix (exit code 2), no traceback,
and nothing already saved changes. The workspace holds a dataset, a run of the toy model and its traces, and is
fingerprinted before and after each case."""

import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest

from ivt_core.cli import main
from ivt_core.workspace import Workspace

TABLES = ("datasets", "samples", "models", "runs", "trajectories", "steps", "traces", "trace_revisions", "jobs",
          "job_metrics", "imports")
HUGE = str(2 ** 64)


def _png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` (a decompression bomb when large) over a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A workspace with data, a run and traces, plus the bad files the cases point at."""
    root = tmp_path_factory.mktemp("bad")
    ws = root / "ws"
    assert main(["data", "shapes", "--workspace", str(ws), "--split", "val", "--n", "6", "--name", "mini"]) == 0
    assert main(["eval", "--workspace", str(ws), "--dataset", "mini", "--split", "val", "--steps", "1"]) == 0
    # counterfactual traces too: the fixture needs a trace whether or not the toy errs on these six scenes
    assert main(["synth", "--workspace", str(ws), "--run", "1", "--include-zero", "--keep-ratio", "1",
                 "--counterfactual", "1"]) == 0
    files = root / "files"
    files.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), "white").save(files / "ok.png")
    (files / "bomb.png").write_bytes(_png(40_000, 40_000))
    (files / "truncated.png").write_bytes((files / "ok.png").read_bytes()[:60])
    (files / "binary.jsonl").write_bytes(bytes(range(256)) * 8)
    row = {"id": "a", "image": "ok.png", "expression": "the thing", "bbox": [1, 1, 10, 10], "bbox_format": "xyxy"}
    (files / "long.jsonl").write_text(json.dumps({**row, "expression": "x" * 100_000}) + "\n")
    (files / "bomb.jsonl").write_text(json.dumps({**row, "image": "bomb.png"}) + "\n")
    (files / "truncated.jsonl").write_text(json.dumps({**row, "image": "truncated.png"}) + "\n")
    (files / "good.jsonl").write_text(json.dumps(row) + "\n")
    (files / "bad.json").write_text('{"lr": 1e-4')
    (files / "list.json").write_text("[1, 2]")
    (files / "unknown.json").write_text('{"lr": 1e-4, "learning_rate": 1}')
    (files / "bad.yaml").write_text("lr: [1, 2\n")
    exported = files / "traces.jsonl"
    assert main(["traces", "export", "--workspace", str(ws), "--status", "pending", "--out", str(exported),
                 "--images", str(files / "img")]) == 0
    record = json.loads(exported.read_text().splitlines()[0])

    def variant(name: str, **changes):
        changed = json.loads(json.dumps(record))
        for key, value in changes.items():
            target = changed["ivt"]
            *path, last = key.split(".")
            for part in path:
                target = target[int(part)] if part.isdigit() else target[part]
            target[last] = value
        (files / name).write_text(json.dumps(changed) + "\n")

    variant("nan_box.jsonl", **{"steps.0.box": [float("nan"), 1, 5, 5]})
    variant("hacked.jsonl", status="hacked")
    variant("outside.jsonl", **{"steps.0.box": [0, 0, 99_999, 5]})
    variant("no_steps.jsonl", steps=[])
    variant("long_reasoning.jsonl", **{"steps.0.reasoning": "y" * 50_000})
    variant("bad_size.jsonl", image_size=[-1, 5])
    return ws, files


def _fingerprint(ws: Path) -> str:
    with Workspace(ws).connect() as db:
        digest = hashlib.sha256()
        for table in TABLES:
            for row in db.query(f"SELECT * FROM {table} ORDER BY rowid"):
                digest.update(repr(sorted(row.items())).encode())
    return digest.hexdigest()


CASES = [
    # names, sizes and numbers
    (["data", "shapes", "--split", "val", "--n", "3", "--name", "a/b"], "is not allowed"),
    (["data", "shapes", "--split", "val", "--n", "3", "--name", ""], "is not allowed"),
    (["data", "shapes", "--split", "val", "--n", "3", "--name", "x" * 200], "is not allowed"),
    (["data", "shapes", "--split", "val", "--n", "3", "--name", "../../etc"], "is not allowed"),
    (["data", "shapes", "--split", "val", "--n", "-1"], "must be 0 or more"),
    (["data", "shapes", "--split", "val", "--n", "lots"], "expected a whole number"),
    (["data", "shapes", "--split", "holdout", "--n", "3"], "invalid choice"),
    (["data", "shapes", "--split", "val", "--n", "3", "--name", "mini", "--seed", "9"], "different kind, seed"),
    # importers
    (["data", "import", "jsonl", "{files}/absent.jsonl"], "does not exist"),
    (["data", "import", "jsonl", "{files}/binary.jsonl"], "every row was skipped"),
    (["data", "import", "jsonl", "{files}/long.jsonl"], "every row was skipped"),
    (["data", "import", "jsonl", "{files}/bomb.jsonl"], "every row was skipped"),
    (["data", "import", "jsonl", "{files}/truncated.jsonl"], "every row was skipped"),
    (["data", "import", "jsonl", "{files}/good.jsonl", "--name", "a/b"], "is not allowed"),
    (["data", "import", "jsonl", "{files}/good.jsonl", "--name", "mini"], "already exists as a shapes dataset"),
    (["data", "import", "jsonl", "{files}/good.jsonl", "--limit", "0"], "must be at least 1"),
    (["data", "import", "jsonl", "{files}/good.jsonl", "--limit", HUGE], "must be at most"),
    (["data", "import", "parquet", "{files}/good.jsonl"], "invalid choice"),
    (["data", "import", "refcocog", "{files}/good.jsonl"], ""),
    (["data", "import", "mix", "a/b,c"], ""),
    (["data", "import", "jsonl", "{files}/good.jsonl", "--images", "{files}/absent"], "is not a folder"),
    # evaluation settings
    (["eval", "--dataset", "nope", "--split", "val"], "unknown dataset"),
    (["eval", "--dataset", "mini", "--split", "nope", "--steps", "0"], ""),
    (["eval", "--dataset", "mini", "--split", "val", "--steps", "11"], "steps must be between 0 and 10"),
    (["eval", "--dataset", "mini", "--split", "val", "--steps", "-1"], "steps must be between 0 and 10"),
    (["eval", "--dataset", "mini", "--split", "val", "--steps", "two"], "expected a whole number"),
    (["eval", "--dataset", "mini", "--split", "val", "--max-new-tokens", "0"], "max_new_tokens must be"),
    (["eval", "--dataset", "mini", "--split", "val", "--batch-size", "-2"], "batch_size must be"),
    (["eval", "--dataset", "mini", "--split", "val", "--limit", "0"], "limit must be between"),
    (["eval", "--dataset", "mini", "--split", "val", "--limit", HUGE], "limit must be between"),
    (["eval", "--dataset", "mini", "--split", "val", "--stop", "never"], "invalid choice"),
    (["eval", "--dataset", "mini", "--split", "val", "--engine", "turbo"], "invalid choice"),
    (["eval", "--dataset", "mini", "--split", "val", "--coords", "polar"], "invalid choice"),
    (["eval", "--dataset", "mini", "--split", "val", "--model", "/nonexistent"], "has no config.json"),
    (["eval", "--dataset", "mini", "--split", "val", "--adapter", "/nonexistent"], "no adapter_config.json"),
    (["eval", "--dataset", "mini", "--split", "val", "--4bit", "--device", "cpu"], "needs a GPU"),
    (["eval", "--dataset", "mini", "--split", "val", "--gpus", "0"], "gpus must be between"),
    (["eval", "--dataset", "mini", "--split", "val", "--config", "{files}/absent.json"], "cannot read config"),
    (["eval", "--dataset", "mini", "--split", "val", "--config", "{files}/bad.json"], "not valid json"),
    (["eval", "--dataset", "mini", "--split", "val", "--config", "{files}/list.json"], "one object"),
    (["eval", "--dataset", "mini", "--split", "val", "--config", "{files}/bad.yaml"], "not valid YAML"),
    (["eval", "--resume-run", "999"], "no run with id 999"),
    (["eval"], "--dataset and --split are required"),
    # runs, reports, jobs
    (["report", "999"], "no run with id 999"),
    (["compare", "1"], "two or three"),
    (["compare", "998", "999"], "no run with id"),
    (["jobs", "show", "999"], "no job with id 999"),
    (["jobs", "cancel", "999"], "no job with id 999"),
    (["jobs", "resume", "999"], "no job with id 999"),
    (["jobs", "show", HUGE], "must be at most"),
    # traces
    (["traces", "show", "999"], "no trace with id 999"),
    (["traces", "approve", "999"], "no trace with id 999"),
    (["traces", "approve"], "give trace ids"),
    (["traces", "approve", "1", "--version", "99"], "does not exist yet"),
    (["traces", "import", "{files}/absent.jsonl"], "not found"),
    (["traces", "import", "{files}/binary.jsonl"], "not a text file"),
    (["traces", "import", "{files}/nan_box.jsonl"], "not a finite number"),
    (["traces", "import", "{files}/hacked.jsonl"], "status 'hacked'"),
    (["traces", "import", "{files}/outside.jsonl"], "lies outside"),
    (["traces", "import", "{files}/no_steps.jsonl"], "steps is not a non-empty list"),
    (["traces", "import", "{files}/long_reasoning.jsonl"], "at most 20,000 are accepted"),
    (["traces", "import", "{files}/bad_size.jsonl"], "image_size"),
    (["synth", "--run", "999"], "no run with id 999"),
    (["synth"], "exactly one of --run"),
    (["synth", "--run", "1", "--run-of-job", "1"], "exactly one of --run"),
    (["synth", "--run", "1", "--iou-low", "0.9", "--iou-high", "0.1"], "--iou-low < --iou-high"),
    (["synth", "--run", "1", "--teacher", "vlm"], "--teacher-model"),
    (["synth", "--run", "1", "--keep-ratio", "nan"], "finite number"),
    (["synth", "--run", "1", "--steps", "11"], "steps must be between 1 and 10"),
    # trainers
    (["train", "sft", "--lr", "nan"], "lr must be a finite number"),
    (["train", "sft", "--lr", "inf"], "lr must be a finite number"),
    (["train", "sft", "--lr", "-1"], "lr must be between"),
    (["train", "sft", "--lora-r", "0"], "lora_r must be between"),
    (["train", "sft", "--epochs", "0", "--max-steps", "-1"], "--epochs > 0 or --max-steps > 0"),
    (["train", "sft", "--base", "/nonexistent"], "has no config.json"),
    (["train", "sft", "--config", "{files}/unknown.json"], "unknown SFTConfig settings: learning_rate"),
    (["train", "grpo", "--beta", "nan"], "beta must be a finite number"),
    (["train", "grpo", "--group-size", "1"], "group_size must be between 2"),
    (["train", "grpo", "--temperature", "0"], "temperature must be between"),
    (["train", "grpo", "--init-adapter", "/nonexistent"], "is not a LoRA adapter folder"),
    (["train", "grpo", "--loss-type", "ppo"], "invalid choice"),
    (["train", "grpo", "--scale-rewards", "std"], "invalid choice"),
    (["train", "grpo", "--dataset", "nope"], "unknown dataset"),
    (["tiny-model", "{files}/tm", "--family", "llama"], "invalid choice"),
    (["probe", "--sample", "nope"], "no sample"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None)
def test_bad_input_is_one_line_and_changes_nothing(prepared, argv, message, capsys):
    ws, files = prepared
    before = _fingerprint(ws)
    argv = [a.replace("{files}", str(files)) for a in argv]
    with_workspace = argv[:2] + ["--workspace", str(ws)] + argv[2:] if argv[0] in ("data", "jobs", "traces",
                                                                                       "train") else \
        argv[:1] + ["--workspace", str(ws)] + argv[1:]
    if argv[0] == "tiny-model":
        with_workspace = argv
    try:
        code = main(with_workspace)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert lines and message in lines[0], err
    assert _fingerprint(ws) == before, "saved data changed"


def test_the_table_is_long_enough():
    assert len(CASES) >= 60


def test_the_app_starts_with_a_workspace_an_older_release_let_through(tmp_path):
    """Names and texts that are refused now may exist in a workspace made before; the app still starts."""
    from ivt_core.store.samples import now
    from ui.app import create_app
    from ui.context import AppContext

    ws = Workspace.open(tmp_path / "ws")
    with ws.connect() as db:
        db.execute("INSERT INTO datasets (name, kind, created_at) VALUES ('a/b', 'jsonl', ?)", [now()])
        db.execute("INSERT INTO samples (id, dataset, split, image_path, width, height, expression, x1, y1, x2, y2) "
                   "VALUES ('a/b/1', 'a/b', 'val', 'x.png', 10, 10, ?, 0, 0, 5, 5)", ["e" * 100_000])
    app = create_app(AppContext(ws))
    assert app is not None


def test_a_second_shapes_dataset_never_takes_the_first_ones_rows(workspace):
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.store.samples import get_samples

    write_shapes_split(workspace, "val", 4, seed=0)
    write_shapes_split(workspace, "val", 4, seed=0, name="copy")  # the same scenes under another name
    with workspace.connect() as db:
        first, second = get_samples(db, "shapes", "val"), get_samples(db, "copy", "val")
    assert len(first) == len(second) == 4 and not {s.id for s in first} & {s.id for s in second}


def test_a_sample_id_of_another_dataset_is_refused_not_moved(workspace):
    from ivt_core.boxes import Box
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.errors import InvalidInputError
    from ivt_core.store.samples import get_samples, upsert_dataset, upsert_samples

    write_shapes_split(workspace, "val", 2, seed=0)
    with workspace.connect() as db:
        taken = get_samples(db, "shapes", "val")[0]
        upsert_dataset(db, "other", "jsonl", {})
        with pytest.raises(InvalidInputError, match="already belongs to dataset 'shapes'"):
            upsert_samples(db, [Sample(taken.id, "other", "val", "x.png", 9, 9, "thing", Box(0, 0, 5, 5))])
        assert get_samples(db, "shapes", "val")[0] == taken
