"""SFT and GRPO on tiny random models (CPU): they run, save, register, refuse nonsense, survive SIGKILL."""

import json
import os
import re
import signal
import time

import pytest

from ivt_core.cli import main
from ivt_core.config.training import GRPOConfig, SFTConfig
from ivt_core.jobs import reconcile, resume, submit
from ivt_core.store.jobs import get_job, job_metrics
from ivt_core.teachers.geometric import GeometricTeacher
from ivt_core.traces import SynthConfig, bulk, synthesize
from tests.integration.test_traces import run  # noqa: F401  (fixture)


@pytest.fixture
def approved(run):  # noqa: F811
    workspace, run_id = run
    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2))
    db = workspace.connect()
    bulk(db, [r["id"] for r in db.query("SELECT id FROM traces")], "approve", "test")
    return workspace


def _sft(workspace, model, *extra):
    return main(["train", "sft", "--workspace", str(workspace.root), "--base", str(model), "--batch-size", "2",
                 "--lora-r", "4", "--lora-alpha", "8", "--eval-fraction", "0", *extra])


def test_sft_trains_saves_and_registers(approved, tiny_models, capsys):
    out = approved.root / "models" / "sft-test"
    assert _sft(approved, tiny_models["qwen3_vl"], "--max-steps", "2", "--out", str(out)) == 0
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "adapter" / "sft_config.json").read_text())["max_steps"] == 2
    assert len((out / "data" / "traces.jsonl").read_text().splitlines()) == 5
    model = approved.connect().execute("SELECT name, adapter_path, parent_id FROM models WHERE name = 'sft-test'")
    name, adapter, parent = model.fetchone()
    assert adapter.endswith("adapter") and parent is not None

    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    assert TransformersGrounder.load(tiny_models["qwen3_vl"], adapter=adapter, device="cpu")
    card = (out / "adapter" / "README.md").read_text()  # how it was made, not peft's template
    assert card.startswith("# sft-test: SFT of ") and "More Information Needed" not in card
    assert "5 approved corrective traces" in card and "2 optimizer steps" in card and "q/k/v/o projections" in card
    assert re.search(r"\| final train loss \| \d+\.\d{4} \|", card)
    assert f"ivt train sft --workspace {approved.root.resolve()} " in card and "--max-steps 2" in card
    assert "--config sft_config.json --out NEW_FOLDER" in card and "--out /" not in card  # not this folder again
    assert "registered as `sft-test`" in card


@pytest.mark.parametrize("extra,message", [
    (["--lr", "-1"], "lr must be"),
    (["--lora-r", "0"], "lora_r"),
    (["--base", "/nonexistent"], "config.json"),
])
def test_sft_refuses_nonsense(approved, tiny_models, capsys, extra, message):
    assert _sft(approved, tiny_models["qwen3_vl"], *extra) == 2
    assert message in capsys.readouterr().err


def test_sft_refuses_without_approved_traces(workspace, tiny_models, capsys):
    assert _sft(workspace, tiny_models["qwen3_vl"]) == 2
    assert "no approved traces" in capsys.readouterr().err


def test_job_submission_refuses_before_starting(approved, tiny_models):
    from ivt_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="group_size"):
        submit(approved, "grpo", GRPOConfig(base=str(tiny_models["qwen3_vl"]), group_size=1))
    assert approved.connect().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_grpo_refuses_adapter_of_another_base(approved, tiny_models, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    other = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen2_5_vl"])
    get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "other")
    config = json.loads((tmp_path / "other" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_models["qwen2_5_vl"])
    (tmp_path / "other" / "adapter_config.json").write_text(json.dumps(config))
    assert main(["train", "grpo", "--workspace", str(approved.root), "--base", str(tiny_models["qwen3_vl"]),
                 "--init-adapter", str(tmp_path / "other")]) == 2
    assert "trained on" in capsys.readouterr().err


def test_grpo_runs_logs_rewards_and_registers(approved, tiny_models, capsys):
    out = approved.root / "models" / "grpo-test"
    assert main(["train", "grpo", "--workspace", str(approved.root), "--base", str(tiny_models["qwen3_vl"]),
                 "--dataset", "shapes", "--split", "test", "--group-size", "2", "--prompts", "2", "--steps", "1",
                 "--max-steps", "2", "--max-new-tokens", "6", "--lora-r", "4", "--out", str(out),
                 "--flywheel-below", "0.5"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert {"reward_mean", "reward_std", "kl", "degradation", "iou_step0", "iou_step1"} <= set(records[0])
    from ivt_core.rollouts import rollout_steps, rollout_views

    viewed = rollout_steps(out)
    assert [r["step"] for r in viewed] == [1, 2] and len(viewed[0]["rollouts"]) == 2  # G rollouts of one prompt
    assert {"boxes", "ious", "answers", "reward", "advantage"} <= set(viewed[0]["rollouts"][0])
    images = rollout_views(approved, viewed[1])
    assert len(images) == 2 and "advantage" in images[0][1]
    assert (out / "adapter" / "adapter_config.json").is_file()
    rows = approved.connect().execute("SELECT name, adapter_path FROM models ORDER BY id").fetchall()
    assert rows[-1][0] == "grpo-test" and rows[-1][1].endswith("grpo-test/adapter")
    card = (out / "adapter" / "README.md").read_text()  # how it was made, its curve in numbers
    assert card.startswith("# grpo-test: GRPO of ") and "More Information Needed" not in card
    assert "2 prompts x G=2 rollouts" in card and "| steps | 2 of 2 |" in card and "`shapes/test`" in card
    assert "(first quarter) ->" in card and "ivt train grpo --workspace " in card and "--group-size 2" in card


def test_grpo_halves_its_micro_batch_when_the_device_runs_out_of_memory(approved, tiny_models, capsys,
                                                                          monkeypatch):
    """micro_batch 0: a step's rollouts in one pass; out of memory, half as many, kept for the next steps.
    The rollouts are rebuilt from the trajectories, so the step still trains on all of them."""
    import torch

    import ivt_core.policy_gradient as pg

    real, seen = pg.policy_update, []

    def update_with_little_memory(policy, reference, batches, *args, **kwargs):
        seen.append([len(b["index"]) for b in batches])
        if max(seen[-1]) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(policy, reference, batches, *args, **kwargs)

    monkeypatch.setattr(pg, "policy_update", update_with_little_memory)
    out = approved.root / "models" / "grpo-oom"
    assert main(["train", "grpo", "--workspace", str(approved.root), "--base", str(tiny_models["qwen3_vl"]),
                 "--dataset", "shapes", "--split", "test", "--group-size", "4", "--prompts", "2", "--steps", "1",
                 "--max-steps", "2", "--max-new-tokens", "4", "--lora-r", "4", "--out", str(out)]) == 0
    assert seen == [[8], [4, 4], [2, 2, 2, 2], [2, 2, 2, 2]]  # found in step 1, kept in step 2
    assert "out of memory: 2 trajectories per forward/backward pass from now on" in capsys.readouterr().out
    monkeypatch.setattr(pg, "policy_update", lambda *a, **k: (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(torch.cuda.OutOfMemoryError):  # a size the user chose is not changed behind their back
        main(["train", "grpo", "--workspace", str(approved.root), "--base", str(tiny_models["qwen3_vl"]),
              "--dataset", "shapes", "--split", "test", "--group-size", "2", "--prompts", "1", "--max-steps", "1",
              "--max-new-tokens", "4", "--micro-batch", "2", "--out", str(approved.root / "models" / "g2")])


def _wait(workspace, job_id, check, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = get_job(workspace.connect(), job_id)
        if check(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id}: {job['status']} {open(job['log_path']).read()[-3000:]}")


def test_sigkill_leaves_interrupted_job_that_resumes_without_losing_metrics(approved, tiny_models):
    config = SFTConfig(base=str(tiny_models["qwen3_vl"]), batch_size=1, lora_r=4, eval_fraction=0.0, max_steps=40,
                       save_steps=2)
    job_id = submit(approved, "sft", config)
    job = _wait(approved, job_id, lambda j: j["progress_done"] >= 5)
    os.killpg(job["pid"], signal.SIGKILL)
    _wait(approved, job_id, lambda j: not _alive(j["pid"]), timeout=30)
    assert reconcile(approved) == [job_id]
    assert get_job(approved.connect(), job_id)["status"] == "interrupted"
    before = job_metrics(approved.connect(), job_id)["loss"]
    trace_versions = approved.connect().execute("SELECT SUM(version) FROM traces").fetchone()[0]
    new_id = resume(approved, job_id)
    done = _wait(approved, new_id, lambda j: j["status"] in ("done", "failed"), timeout=300)
    assert done["status"] == "done" and done["progress_done"] == 40
    assert job_metrics(approved.connect(), job_id)["loss"] == before  # the first run's rows are kept
    assert job_metrics(approved.connect(), new_id)["loss"][-1][0] == 40
    assert approved.connect().execute("SELECT SUM(version) FROM traces").fetchone()[0] == trace_versions


def _alive(pid):
    try:
        os.kill(pid, 0)
        os.waitpid(pid, os.WNOHANG)
    except (ProcessLookupError, ChildProcessError):
        return False
    return True


def test_sft_full_finetune_with_replay_saves_a_whole_checkpoint(approved, tiny_models):
    out = approved.root / "models" / "sft-full"
    assert _sft(approved, tiny_models["qwen3_vl"], "--max-steps", "2", "--out", str(out), "--full-finetune",
                "--replay", "1") == 0
    assert (out / "model" / "config.json").is_file() and (out / "model" / "chat_template.jinja").is_file()

    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    assert TransformersGrounder.load(out / "model", device="cpu").family.name == "qwen3_vl"


def test_replay_examples_train_the_ground_truth_answer(approved, tmp_path, tiny_models):
    from ivt_core.grounders.processing import load_processor
    from ivt_core.supervision import IGNORE
    from ivt_core.trace_export import export_traces
    from training.sft import TraceDataset

    path = tmp_path / "t.jsonl"
    export_traces(approved, path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    processor = load_processor(tiny_models["qwen3_vl"], "qwen3_vl")
    dataset = TraceDataset(records, path.parent, processor, replay=1.0)
    assert len(dataset) == 2 * len(records)
    example = dataset[len(records)]
    trained = processor.tokenizer.decode(example["input_ids"][example["labels"] != IGNORE])
    assert trained.startswith('{"bbox_2d": [') and example["image_grid_thw"].shape[0] == 1


def test_sft_skips_a_checkpoint_left_half_written(approved, tiny_models):
    out = approved.root / "models" / "sft-half"
    (out / "checkpoints" / "checkpoint-999").mkdir(parents=True)  # as a kill during saving leaves it
    assert _sft(approved, tiny_models["qwen3_vl"], "--max-steps", "2", "--out", str(out)) == 0
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_grpo_from_an_sft_adapter_is_its_own_model_with_both_adapters(approved, tiny_models):
    sft_out, grpo_out = approved.root / "models" / "sft-a", approved.root / "models" / "grpo-b"
    assert _sft(approved, tiny_models["qwen3_vl"], "--max-steps", "1", "--out", str(sft_out)) == 0
    assert main(["train", "grpo", "--workspace", str(approved.root), "--base", str(tiny_models["qwen3_vl"]),
                 "--init-adapter", str(sft_out / "adapter"), "--dataset", "shapes", "--split", "test",
                 "--group-size", "2", "--prompts", "1", "--steps", "1", "--max-steps", "1", "--max-new-tokens", "4",
                 "--lora-r", "2", "--out", str(grpo_out)]) == 0
    db = approved.connect()
    rows = {r["name"]: r for r in db.query("SELECT id, name, adapter_path, parent_id FROM models")}
    sft, grpo = rows["sft-a"], rows["grpo-b"]
    assert grpo["id"] != sft["id"] and grpo["parent_id"] == sft["id"]
    assert grpo["adapter_path"] == f"{(sft_out / 'adapter').resolve()},{(grpo_out / 'adapter').resolve()}"

    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    loaded = TransformersGrounder.load(tiny_models["qwen3_vl"], adapter=grpo["adapter_path"], device="cpu")
    assert "sft-a" in loaded.name and "grpo-b" in loaded.name  # both adapters applied, in order


def test_full_finetuning_keeps_the_vision_tower_by_default(approved, tiny_models):
    import torch
    from transformers import AutoModelForImageTextToText

    out = approved.root / "models" / "sft-frozen"
    assert _sft(approved, tiny_models["qwen3_vl"], "--max-steps", "2", "--out", str(out), "--full-finetune",
                "--lr", "1e-2") == 0
    before = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen3_vl"]).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(out / "model").state_dict()
    vision = [k for k in before if ".visual." in f".{k}"]
    language = [k for k in before if "language_model" in k and k.endswith("q_proj.weight")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in language)


def test_step0_self_distillation_and_fresh_replay(approved, tmp_path, tiny_models):
    from ivt_core.families import FAMILIES
    from ivt_core.grounders.processing import load_processor
    from ivt_core.supervision import IGNORE
    from ivt_core.trace_export import export_traces
    from training.sft import TraceDataset, fresh_scene_replay

    path = tmp_path / "t.jsonl"
    export_traces(approved, path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    processor = load_processor(tiny_models["qwen3_vl"], "qwen3_vl")
    plain = TraceDataset(records, path.parent, processor)[0]
    anchored = TraceDataset(records, path.parent, processor, train_step0=True)[0]
    assert (anchored["labels"] != IGNORE).sum() > (plain["labels"] != IGNORE).sum()
    student = records[0]["ivt"]["student_text"]
    trained = processor.tokenizer.decode(anchored["input_ids"][anchored["labels"] != IGNORE])
    assert student.strip()[:20] in trained  # the model's own step-0 answer is now a target
    fresh = TraceDataset(records, path.parent, processor, replay=1.0,
                         fresh_replay=fresh_scene_replay(FAMILIES["qwen3_vl"], 0))
    first, second = fresh[len(records)], fresh[len(records) + 1]
    assert not torch_equal(first["pixel_values"], second["pixel_values"])  # a new scene each time


def torch_equal(a, b):
    import torch

    return a.shape == b.shape and torch.equal(a, b)


def test_sft_workers_build_examples_in_other_processes_with_the_same_result(approved, tiny_models, monkeypatch):
    import torch
    import transformers.trainer
    from safetensors.torch import load_file

    seen = []
    real = transformers.trainer.DataLoader

    def spy(*args, **kwargs):
        seen.append(kwargs.get("num_workers", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.trainer, "DataLoader", spy)
    weights = {}
    for workers in (0, 2):
        out = approved.root / "models" / f"sft-w{workers}"
        assert _sft(approved, tiny_models["qwen3_vl"], "--max-steps", "2", "--out", str(out), "--workers",
                    str(workers), "--lora-dropout", "0") == 0  # (worker seeds advance the dropout's generator)
        weights[workers] = load_file(out / "adapter" / "adapter_model.safetensors")
    assert seen == [0, 2]
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def _sft_with_verifier_run(workspace, tiny_models, name):
    """One SFT step on the tiny model with the verifier test on the workspace's first run: (db, run id, out)."""
    db = workspace.connect()
    run_id = db.execute("SELECT id FROM runs ORDER BY id LIMIT 1").fetchone()[0]
    out = workspace.root / "models" / name
    assert _sft(workspace, tiny_models["qwen3_vl"], "--max-steps", "1", "--out", str(out),
                "--verifier-run", str(run_id)) == 0
    return db, run_id, out


def test_sft_runs_the_verifier_test_and_keeps_it_with_the_model(approved, tiny_models, capsys):
    from ivt_core.store.models import get_model
    from ivt_core.verifier import stored_verdict

    db, run_id, out = _sft_with_verifier_run(approved, tiny_models, "sft-verified")
    assert "AUROC of P(\"The box is correct.\")" in capsys.readouterr().out
    card = (out / "adapter" / "README.md").read_text()
    assert re.search(rf"\| verifier test \| AUROC (\d\.\d{{3}}|n/a[^|]*) of P\(\"The box is correct\.\"\) on run "
                     rf"{run_id}'s step-0 boxes \(\d+ right, \d+ wrong at IoU 0\.5\)", card)
    model_id = db.execute("SELECT id FROM models WHERE name = 'sft-verified'").fetchone()[0]
    (verdict,) = stored_verdict(get_model(db, model_id), run_id)
    assert verdict["n"] == verdict["right"] + verdict["wrong"] > 0


def test_sft_refuses_an_unknown_verifier_run_before_training(approved, tiny_models, capsys):
    out = approved.root / "models" / "sft-never"
    assert _sft(approved, tiny_models["qwen3_vl"], "--max-steps", "1", "--out", str(out), "--verifier-run", "999") == 2
    assert "no run with id 999" in capsys.readouterr().err and not (out / "adapter").exists()


def test_sft_registers_its_model_even_when_the_verifier_run_cannot_be_judged(approved, tiny_models, capsys,
                                                                             monkeypatch):
    import ivt_core.verifier
    from ivt_core.errors import InvalidInputError

    def unjudgeable(*args, **kwargs):  # e.g. the run's images were deleted after it was checked
        raise InvalidInputError("the images of run 1 are missing")

    monkeypatch.setattr(ivt_core.verifier, "judge_run", unjudgeable)
    db, _, out = _sft_with_verifier_run(approved, tiny_models, "sft-unjudged")
    assert "verifier test not run:" in capsys.readouterr().out
    assert db.execute("SELECT count(*) FROM models WHERE name = 'sft-unjudged'").fetchone()[0] == 1
    assert "| verifier test |" not in (out / "adapter" / "README.md").read_text()
