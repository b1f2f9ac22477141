"""SFT on approved corrective traces: LoRA on the language model's attention, loss on the corrective turns only.

    python -m training.sft --config sft.json                      # a JSON file of SFTConfig fields
    ivt train sft --workspace W --base assets/toy-model --epochs 2 [--job]
    accelerate launch --num_processes 2 -m training.sft --config sft.json   # several GPUs (DDP)

Data: the workspace's approved traces, snapshotted at start into OUT/data/traces.jsonl (+ images), so the run is
reproducible and later review does not change it. Each trace is one multi-image conversation; the student's own
step-0 answer is context (no loss), every corrective assistant turn is a target (``supervision.build_example``).
Training runs in transformers' ``Trainer`` (gradient accumulation, bf16 where available, evaluation on a
held-out share, checkpoints, ``resume_from_checkpoint``, DDP under accelerate); what it cannot do by itself is
here: the multi-turn masks and multimodal collation (``ivt_core.supervision``), progress and metrics into the job
row, and SIGTERM -> save a checkpoint and stop. The resolved config is saved with every checkpoint and with the
final adapter, which is registered in the store as a model whose parent is the base.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ivt_core.config.settings import stored
from ivt_core.config.training import LORA_TARGET_WORDS, LORA_TARGETS, SFTConfig
from ivt_core.errors import InvalidInputError
from training.config_cli import config_from_args as cli_config
from training.config_cli import run_main


def snapshot_traces(workspace, cfg: SFTConfig, out: Path) -> Path:
    """Export the traces to train on into OUT/data (the run's training data snapshot)."""
    from ivt_core.trace_export import export_traces

    data = out / "data"
    path = data / "traces.jsonl"
    if path.is_file():  # resuming: keep the original snapshot
        return path
    count = export_traces(workspace, path, status=cfg.traces_status, images_dir=str(data / "images"))
    if count == 0:
        raise InvalidInputError(f"no {cfg.traces_status} traces in {workspace.root}: synthesize and approve some "
                                "(`ivt synth`, `ivt traces approve`) before SFT")
    return path


class TraceDataset:
    """Examples built lazily from the snapshot (images loaded per item, so memory stays flat).

    With ``replay`` > 0, ``replay`` x len(records) extra items are single-shot grounding examples (the trace's
    original image, the grounding prompt, the ground-truth box as the answer): replay of the model's first task.
    """

    def __init__(self, records: list[dict], base_dir: Path, processor, replay: float = 0.0,
                 train_step0: bool = False, fresh_replay: Callable[[int], list[dict]] | None = None):
        self.records, self.base_dir, self.processor = records, base_dir, processor
        self.n_replay = int(round(replay * len(records)))
        self.train_step0, self.fresh_replay = train_step0, fresh_replay

    def __len__(self) -> int:
        return len(self.records) + self.n_replay

    def __getitem__(self, i: int) -> dict:
        from ivt_core.supervision import build_example
        from ivt_core.trace_export import record_to_conversation
        from ivt_core.traces import COUNTERFACTUAL

        if i < len(self.records):
            conversation, train = record_to_conversation(self.records[i], self.base_dir)
            # the first answer is the student's own (greedy) step 0, except in a counterfactual trace
            if self.train_step0 and self.records[i]["ivt"].get("origin") != COUNTERFACTUAL:
                train = train | {next(k for k, m in enumerate(conversation) if m["role"] == "assistant")}
            return build_example(self.processor, conversation, train)
        if self.fresh_replay is not None:
            return build_example(self.processor, self.fresh_replay(i - len(self.records)))
        record = self.records[(i - len(self.records)) % len(self.records)]
        return build_example(self.processor, replay_conversation(record, self.base_dir))


def replay_conversation(record: dict, base_dir: Path) -> list[dict]:
    from ivt_core.boxes import Box, to_model
    from ivt_core.data.sample import load_image

    meta = record["ivt"]
    image_path = Path(record["images"][0])
    image = load_image(image_path if image_path.is_absolute() else base_dir / image_path)
    resized = meta["meta"].get("resized")
    coords = to_model(Box(*meta["ground_truth"]), meta["meta"].get("convention", "norm1000"),
                      tuple(meta["image_size"]), tuple(resized) if resized else None)
    first = record["messages"][0]
    return [{"role": "user", "content": [{"type": "image", "image": image}, dict(first["content"][1])]},
            {"role": "assistant", "content": [{"type": "text", "text": json.dumps({"bbox_2d": coords})}]}]


def fresh_scene_replay(family, seed: int) -> Callable[[int], list[dict]]:
    """Replay conversations on new shapes-world scenes (split "replay", never a trace's): the grounding prompt and
    the ground-truth box, in the family's convention."""
    from ivt_core.boxes import to_model
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.prompts import get_prompts

    world, prompts = ShapesConfig(), get_prompts(family.prompt_family)

    def conversation(index: int) -> list[dict]:
        scene = make_sample(world, seed, "replay", index)
        coords = to_model(scene.bbox, family.convention, scene.image.size, None)
        return [{"role": "user", "content": [{"type": "image", "image": scene.image},
                                             {"type": "text", "text": prompts.ground_text(scene.expression)}]},
                {"role": "assistant", "content": [{"type": "text", "text": json.dumps({"bbox_2d": coords})}]}]

    return conversation


def freeze_vision_tower(model) -> int:
    """Stop gradients into the vision tower; return how many parameters were frozen."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual."):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def train(cfg: SFTConfig) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, Trainer, TrainerCallback, TrainingArguments, set_seed

    from ivt_core.families import family_for_model_type
    from ivt_core.grounders.processing import load_processor
    from ivt_core.jobs import JobReporter
    from ivt_core.store.models import register_model
    from ivt_core.supervision import collate, cpu_rope_index
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(cfg.workspace)
    cfg.preflight(workspace)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sft_config.json").write_text(json.dumps(stored(cfg), indent=1))
    base = Path(cfg.base)
    model_type = json.loads((base / "config.json").read_text())["model_type"]
    family = family_for_model_type(model_type)
    processor = load_processor(base, family.name)
    from accelerate import PartialState

    with PartialState().main_process_first():  # under DDP, rank 0 writes the snapshot, the others read it
        data_path = snapshot_traces(workspace, cfg, out)
    records = [json.loads(line) for line in data_path.read_text().splitlines() if line.strip()]
    n_eval = int(len(records) * cfg.eval_fraction) if len(records) >= 10 else 0
    fresh = None
    if cfg.replay and cfg.replay_source == "fresh":
        if family.convention == "abs_resized":
            raise InvalidInputError("--replay-source fresh needs a model whose boxes are not in resized pixels")
        fresh = fresh_scene_replay(family, cfg.seed)
    train_set = TraceDataset(records[n_eval:], data_path.parent, processor, cfg.replay, cfg.train_step0, fresh)
    eval_set = TraceDataset(records[:n_eval], data_path.parent, processor) if n_eval else None

    cuda = torch.cuda.is_available()
    kwargs: dict = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=kwargs["dtype"])
    model = AutoModelForImageTextToText.from_pretrained(str(base), **kwargs)
    set_seed(cfg.seed)  # the adapter's initialisation is the seed's, whatever ran before in this process
    # the language model only (the vision tower's qkv/proj are left alone)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=LORA_TARGETS[cfg.lora_targets])
    if not cfg.full_finetune:
        model = get_peft_model(model, lora)
    elif cfg.freeze_vision:
        print(f"vision tower frozen: {freeze_vision_tower(model) / 1e6:.2f} M parameters", flush=True)
    inner = model.base_model.model.model if not cfg.full_finetune else model.model
    rope = cpu_rope_index(type(inner), model.config) if family.rope_index else None
    pad = processor.tokenizer.pad_token_id

    reporter = JobReporter(workspace, cfg.job_id or None)

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            for key, value in (logs or {}).items():
                if isinstance(value, (int, float)) and key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
                    reporter.metric(state.global_step, key, value)
            reporter.progress(state.global_step, state.max_steps, f"step {state.global_step}/{state.max_steps}")

        def on_step_end(self, args, state, control, **kw):
            if stop_requested["flag"]:
                control.should_save = True
                control.should_training_stop = True

    stop_requested = {"flag": False}
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, bf16=cuda,
        logging_steps=1, save_steps=cfg.save_steps, save_total_limit=2, eval_strategy="epoch" if eval_set else "no",
        report_to=[], remove_unused_columns=False, seed=cfg.seed, dataloader_num_workers=cfg.workers, use_cpu=not cuda,
        disable_tqdm=False, warmup_steps=min(10, max(1, cfg.max_steps // 10)) if cfg.max_steps > 0 else 5,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=lambda ex: collate(ex, pad, rope), callbacks=[Report()])
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *a: stop_requested.update(flag=True))
    # only complete checkpoints: a process killed while saving leaves a folder without trainer_state.json
    complete = [p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    checkpoints = sorted(complete, key=lambda p: int(p.name.split("-")[1]))
    began = time.perf_counter()
    with reporter:
        signal.signal(signal.SIGTERM, lambda *a: stop_requested.update(flag=True))  # the reporter set its own
        trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
        if stop_requested["flag"]:
            raise KeyboardInterrupt("stopped by SIGTERM after saving a checkpoint")
        if trainer.is_world_process_zero():
            adapter = out / ("model" if cfg.full_finetune else "adapter")
            model.save_pretrained(adapter)
            if cfg.full_finetune:  # a complete checkpoint: weights plus the base's tokenizer and processor
                processor.save_pretrained(adapter)
                processor.image_processor.save_pretrained(adapter)
                (adapter / "chat_template.jinja").write_text(processor.chat_template)
            (adapter / "sft_config.json").write_text(json.dumps(stored(cfg), indent=1))
            seconds = time.perf_counter() - began
            verdict = _verifier_test(workspace, cfg, base, adapter) if cfg.verifier_run else None
            _card(adapter, out.name, base, cfg, trainer.state, len(records), n_eval, data_path, seconds, verdict)
            db = workspace.connect()
            parent = register_model(db, base.name, str(base.resolve()), family.name)
            model_base = adapter if cfg.full_finetune else base
            model_id = register_model(
                db, out.name, str(model_base.resolve()), family.name,
                adapter_path="" if cfg.full_finetune else str(adapter.resolve()), parent_id=parent,
                origin_job=cfg.job_id or None,
                meta={"kind": "sft", "config": stored(cfg), "data": str(data_path), "traces": len(records)})
            if verdict is not None:
                from ivt_core.verifier import store_verdict

                store_verdict(db, model_id, verdict)  # the paper's table shows it beside this model's rows
            db.close()
            print(json.dumps({"model_id": model_id, "adapter": str(adapter)}), flush=True)
    signal.signal(signal.SIGTERM, previous)
    return out / "adapter"


def _verifier_test(workspace, cfg: SFTConfig, base: Path, saved: Path) -> dict | None:
    """The verifier test of the model just saved on run ``cfg.verifier_run``'s step-0 boxes
    (``ivt_core.verifier.judge_run``, as `ivt verifier` runs it); its summary, or None (said in one line) when
    the run cannot be judged: the trained model is registered either way."""
    from ivt_core.errors import IVTError
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.verifier import judge_run, summary_text

    grounder = (TransformersGrounder.load(saved, load_in_4bit=cfg.load_in_4bit) if cfg.full_finetune else
                TransformersGrounder.load(base, adapter=saved, load_in_4bit=cfg.load_in_4bit))
    db = workspace.connect()
    try:
        summary, _ = judge_run(workspace, db, grounder, cfg.verifier_run)
    except IVTError as exc:
        print(f"verifier test not run: {exc} (`ivt verifier {cfg.verifier_run} --model ...` runs it later)",
              flush=True)
        return None
    finally:
        db.close()
    print(summary_text(summary), flush=True)
    return summary


def _card(folder: Path, name: str, base: Path, cfg: SFTConfig, state, traces: int, held_out: int, data: Path,
          seconds: float, verdict: dict | None = None) -> None:
    """The model card beside the saved model (``training.model_card``): how this SFT run made it."""
    from training.model_card import duration, write_model_card

    logged = state.log_history
    loss = next((r["loss"] for r in reversed(logged) if "loss" in r), None)
    eval_loss = next((r["eval_loss"] for r in reversed(logged) if "eval_loss" in r), None)
    method = ("full fine-tuning" + (", vision tower frozen" if cfg.freeze_vision else "") if cfg.full_finetune
              else f"LoRA r {cfg.lora_r}, alpha {cfg.lora_alpha}, dropout {cfg.lora_dropout:g}, on the language "
                   f"model's {LORA_TARGET_WORDS[cfg.lora_targets]}")
    facts = [
        ("starts from", f"`{base.resolve()}`"),
        ("method", method),
        ("data", f"{traces} approved corrective traces of workspace `{Path(cfg.workspace).resolve()}` "
                 f"({held_out} held out for the eval loss), snapshot `{data}`"
                 + (f"; replay of {cfg.replay:g} x single-shot examples ({cfg.replay_source})" if cfg.replay else "")),
        ("training", f"{state.global_step} optimizer steps, batch {cfg.batch_size} x {cfg.grad_accum} accumulated, "
                     f"lr {cfg.lr:g}, seed {cfg.seed}"),
        ("time", f"{duration(seconds)} of training in the process that finished it"),
        ("final train loss", "-" if loss is None else f"{loss:.4f}"),
        ("final eval loss", "-" if eval_loss is None else f"{eval_loss:.4f}"),
        *([("verifier test", verdict_fact(verdict))] if verdict else []),
        ("files", "`sft_config.json` (the configuration), "
                  + ("the whole checkpoint" if cfg.full_finetune else "`adapter_config.json`, "
                                                                       "`adapter_model.safetensors` (peft)")),
    ]
    write_model_card(folder, title=f"{name}: SFT of {base.name}", kind="sft", config=cfg, facts=facts,
                     config_file="sft_config.json")


def verdict_fact(s: dict) -> str:
    """The verifier test's summary as one model-card cell."""
    auroc = "n/a (needs right and wrong boxes)" if s["auroc"] is None else f"{s['auroc']:.3f}"
    kinds = ", ".join(f"{kind} {'-' if v['auroc'] is None else format(v['auroc'], '.3f')} ({v['n']})"
                      for kind, v in s.get("by_kind", {}).items())
    return (f"AUROC {auroc} of P(\"The box is correct.\") on run {s['run_id']}'s step-0 boxes ({s['right']} right, "
            f"{s['wrong']} wrong at IoU {s['threshold']:g})" + (f"; by kind of wrong box: {kinds}" if kinds else ""))


def config_from_args(argv: list[str] | None = None) -> SFTConfig:
    return cli_config(SFTConfig, "sft", "SFT on approved corrective traces", argv)


def main(argv: list[str] | None = None) -> int:
    return run_main("sft", train, config_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
