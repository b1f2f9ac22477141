"""GRPO through the real IVT loop: G sampled trajectories per prompt, rendered boxes between steps.

    python -m training.grpo --config grpo.json
    ivt train grpo --workspace W --init-adapter W/models/sft-job3/adapter --max-steps 50 [--job]

Why a hand-written loop: TRL's GRPOTrainer generates one completion per prompt; here every rollout is a
multi-turn conversation whose later turns contain images rendered from the model's own earlier answers, which
its generation step cannot produce for every model family. The loop is short; its pieces (rewards, group
advantages, token log-probs, KL, clipped loss) live in ``ivt_core.rewards`` with literal tests.

Per step: take ``prompts`` training samples, roll each out G times through ``ivt_core.loop.run_samples`` (the cached
engine where the model has it) with sampling, score each trajectory with the reward (``ivt_core.rewards``; default
final IoU + 0.1 x format), normalise rewards within each group, and take one policy-gradient step on all assistant
tokens of the trajectories, with a KL penalty (beta) to the reference. The reference is the starting model: an SFT
adapter given by ``init_adapter`` is merged into the base in memory and a new LoRA adapter is trained on top, so
disabling that adapter gives the reference with no second copy of the weights. Logged per step: reward mean and std,
IoU per step, degradation, KL, completion length. Optional flywheel: rollouts under ``flywheel_below`` go to the
geometric teacher and into the review queue as pending traces (origin ``grpo``). """

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from ivt_core.config.settings import stored
from ivt_core.config.training import LORA_TARGET_WORDS, LORA_TARGETS, GRPOConfig
from training.config_cli import config_from_args as cli_config
from training.config_cli import run_main


def _trajectory_tensors(processor, trajectories, chunk: list[int], cfg: GRPOConfig, rope, pad, device=None,
                        pixels: dict | None = None) -> dict:
    """A micro-batch of rollouts as model inputs: each assistant turn holds the tokens it sampled; the trained
    turns are all of them, or the refinement turns only (``train_turns="refinement"``: step 0 is context).
    The ids are the cached engine's own (``rollout_example_from_ids``: no chat template, no tokenizer), else the
    conversation is templated again (``build_rollout_example``); the pixels are computed once per distinct image,
    on ``device`` when it is a GPU (``image_inputs``; ``pixels``: its cache, which the rollout's engine filled).
    ``rebuilt``: how many rollouts needed the slow path."""
    from ivt_core.grounders.base import conversation_images
    from ivt_core.supervision import build_rollout_example, collate, image_inputs, rollout_example_from_ids

    examples, images, rebuilt = [], [], 0
    for index in chunk:
        conversation = trajectories[index].conversation
        answers = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
        trained = set(answers[1:] if cfg.train_turns == "refinement" else answers)
        example = rollout_example_from_ids(conversation, trained, processor.image_token_id,
                                           processor.tokenizer.eos_token_id, cfg.mask_truncated_completions)
        if example is None:
            example, rebuilt = build_rollout_example(processor, conversation, trained,
                                                     cfg.mask_truncated_completions), rebuilt + 1
        examples.append(example)
        images.append(conversation_images(conversation))
    pixel_values = None
    if any(images):
        gpu = device if device is not None and str(device).startswith("cuda") else None
        pixel_values, grids = image_inputs(processor, [image for group in images for image in group], gpu, pixels)
        for example, group, part in zip(examples, images, grids.split([len(g) for g in images]), strict=True):
            example.pop("pixel_values", None)
            if group:
                example["image_grid_thw"] = part
    batch = collate(examples, pad, rope)
    if pixel_values is not None:
        batch["pixel_values"] = pixel_values
    return {**batch, "index": chunk, "rebuilt": rebuilt}


def rollout_record(step: int, batch, trajectories, rewards, advantages, group_size: int) -> dict:
    """One step's first group of rollouts as the Train tab's rollout viewer reads them (``ivt_core.rollouts``)."""
    sample = batch[0]
    return {"step": step, "sample_id": sample.id, "image_path": sample.image_path, "expression": sample.expression,
            "ground_truth": sample.bbox.to_xyxy(), "rollouts": [
                {"boxes": [s.box.to_xyxy() if s.box is not None else None for s in t.steps],
                 "ious": [round(s.iou, 4) for s in t.steps], "answers": [s.raw_text for s in t.steps],
                 "reward": round(float(rewards[i]), 4), "advantage": round(float(advantages[i]), 4)}
                for i, t in enumerate(trajectories[:group_size])]}


# cuDNN's attention (which torch picks first for masked bf16 attention on H100/H200) spends ~8 ms of CPU per call
# here, where every rollout batch and micro-batch has new shapes: 228 calls, 1.9 s of CPU in 3 toy steps
# (torch.profiler on one H200, docs/LOG.md), most of a step that needs ~0.2 s of GPU time. The trainer's process
# uses the other SDPA kernels (flash, memory-efficient, math). A benchmark may set it back to compare.
CUDNN_ATTENTION = False
ENGINE_TIMES = ("prepare_s", "compact_s", "prefill_s", "decode_s")  # where a rollout's time went (engine stats)
KL_STILL = 1e-4
KL_WINDOW = 10


def not_moving(kls: list[float]) -> bool:
    """True once, when the KL has stayed under ``KL_STILL`` for exactly the last ``KL_WINDOW`` steps."""
    return len(kls) >= KL_WINDOW and max(kls[-KL_WINDOW:]) < KL_STILL and (
        len(kls) == KL_WINDOW or kls[-KL_WINDOW - 1] >= KL_STILL)


def train(cfg: GRPOConfig) -> Path:
    import random

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    from ivt_core.data.sample import load_image
    from ivt_core.families import family_for_model_type
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.engine import CachedEngine
    from ivt_core.grounders.fast_vision import enable_fast_vision
    from ivt_core.grounders.processing import load_processor
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.jobs import JobReporter
    from ivt_core.loop import LoopConfig, engine_for, run_samples
    from ivt_core.metrics import degradation
    from ivt_core.policy_gradient import advantages as group_advantages
    from ivt_core.policy_gradient import chunks, policy_update
    from ivt_core.render import render_style
    from ivt_core.rewards import get_reward
    from ivt_core.rope import checked as checked_rope
    from ivt_core.store.samples import get_dataset, get_samples
    from ivt_core.supervision import cpu_rope_index
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(cfg.workspace)
    cfg.preflight(workspace)
    torch.backends.cuda.enable_cudnn_sdp(CUDNN_ATTENTION)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grpo_config.json").write_text(json.dumps(stored(cfg), indent=1))
    torch.manual_seed(cfg.seed)
    base = Path(cfg.base)
    family = family_for_model_type(json.loads((base / "config.json").read_text())["model_type"])
    processor = load_processor(base, family.name)
    from accelerate import Accelerator
    from accelerate.utils.memory import clear_device_cache

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    main_rank = accelerator.is_main_process
    model = AutoModelForImageTextToText.from_pretrained(
        str(base), dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    if cfg.init_adapter:
        model = PeftModel.from_pretrained(model, cfg.init_adapter).merge_and_unload()
    checkpoint = out / "checkpoint"
    if not checkpoint.exists() and checkpoint.with_name("checkpoint.old").exists():  # killed during the swap
        checkpoint.with_name("checkpoint.old").rename(checkpoint)
    if (checkpoint / "state.pt").is_file():
        model = PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
        state = torch.load(checkpoint / "state.pt", weights_only=True)
    else:
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          target_modules=LORA_TARGETS["attention"])
        model = get_peft_model(model, lora)
        state = None
    model.to(device)
    enable_fast_vision(model)
    lr = cfg.learning_rate(sum(p.numel() for p in model.parameters()))
    print(f"learning rate {lr:g}" + (" (by model size: --lr 0)" if not cfg.lr else ""), flush=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    wrapped, optimizer = accelerator.prepare(model, optimizer)  # DDP under accelerate launch; as is otherwise
    model = accelerator.unwrap_model(wrapped)
    rope = cpu_rope_index(type(model.base_model.model.model), model.config) if family.rope_index else None
    if rope is not None:  # the same positions, segment by segment (ivt_core.rope), where they agree
        rope = checked_rope(rope, processor.image_token_id, processor.image_processor.merge_size)
    pad = processor.tokenizer.pad_token_id
    reward_fn = get_reward(cfg.reward)
    db = workspace.connect()
    samples = get_samples(db, cfg.dataset, cfg.split)
    grounder = TransformersGrounder(model, processor, family, "grpo-policy", str(device))
    dataset = get_dataset(db, cfg.dataset)
    loop = LoopConfig(steps=cfg.steps, batch_size=cfg.prompts * cfg.group_size,
                      render=render_style(cfg.render, dataset["kind"] if dataset else ""),
                      sampling=Sampling(max_new_tokens=cfg.max_new_tokens, do_sample=True,
                                        temperature=cfg.temperature))
    stop = {"flag": False}
    kls: list[float] = []
    micro = cfg.micro_batch  # 0: all of a step's rollouts, until the device runs out of memory

    def reference(inputs):
        """The starting model: the policy with its new adapter switched off (the SFT adapter is merged in)."""
        with model.disable_adapter():
            return model(**inputs).logits

    log = (out / "metrics.jsonl").open("a") if main_rank else None
    began = time.perf_counter()
    with JobReporter(workspace, cfg.job_id if main_rank and cfg.job_id else None) as reporter:
        signal.signal(signal.SIGTERM, lambda *a: stop.update(flag=True))
        for step in range(start, cfg.max_steps):
            rng = random.Random(f"{cfg.seed}:{step}:{accelerator.process_index}")  # each rank its own prompts
            prompts = rng.sample(samples, min(cfg.prompts, len(samples)))
            batch = [s for s in prompts for _ in range(cfg.group_size)]
            scenes = [load_image(workspace.resolve(s.image_path)) for s in prompts]  # one image object per prompt:
            images = [scene for scene in scenes for _ in range(cfg.group_size)]   # its pixels are computed once
            model.eval()
            began = time.perf_counter()
            pixels: dict = {}  # the step's images processed once: by the rollout's engine, read by the update
            engine = (CachedEngine(model, processor, str(device), pixel_cache=pixels)
                      if engine_for(grounder, loop) == "cached" else None)
            trajectories = run_samples(grounder, batch, loop, images, keep_conversations=True, engine=engine)
            rolled = time.perf_counter()
            rewards = torch.tensor([reward_fn(t) for t in trajectories])
            advantages = group_advantages(rewards, cfg.group_size, cfg.scale_rewards)
            model.train()
            while True:
                batches = [_trajectory_tensors(processor, trajectories, chunk, cfg, rope, pad, device, pixels)
                           for chunk in chunks(len(trajectories), micro or len(trajectories))]
                rebuilt = sum(b.pop("rebuilt") for b in batches)
                prepared = time.perf_counter()
                try:
                    update = policy_update(
                        lambda inputs: wrapped(**inputs).logits, reference if cfg.beta else None, batches,
                        advantages, optimizer, beta=cfg.beta, clip=cfg.clip, loss_type=cfg.loss_type,
                        num_iterations=cfg.num_iterations, temperature=cfg.temperature,
                        max_tokens=cfg.max_new_tokens * (cfg.steps + 1), backward=accelerator.backward,
                        before_step=lambda: accelerator.clip_grad_norm_(wrapped.parameters(), 1.0), device=device)
                    break
                except Exception as exc:  # noqa: BLE001 - only running out of memory is retried
                    micro = _smaller_micro_batch(exc, micro or len(trajectories), cfg, accelerator.num_processes)
                    optimizer.zero_grad(set_to_none=True)
                    batches = None
                    clear_device_cache(garbage_collection=True)
                    print(f"out of memory: {micro} trajectories per forward/backward pass from now on", flush=True)
            pixels.clear()  # the step's pixels are no longer needed (GPU memory)
            kls.append(update["kl"])
            timing = {"rollout_s": rolled - began, "prepare_s": prepared - rolled,
                      "update_s": time.perf_counter() - prepared, "rebuilt": rebuilt,
                      **({f"rollout_{k}": round(engine.stats[k], 4) for k in ENGINE_TIMES} if engine else {})}
            gathered = accelerator.gather(rewards.to(device)).cpu()  # every rank's rollouts in the logged numbers
            per_step = [sum(t.steps[k].iou for t in trajectories if len(t.steps) > k) / len(trajectories)
                        for k in range(cfg.steps + 1)]
            losses = [x for t in trajectories for x in degradation(t)]
            record = {"step": step + 1, "reward_mean": gathered.mean().item(), "reward_std": gathered.std().item(),
                      "kl": update["kl"], "loss": update["loss"], "degradation": sum(losses) / max(1, len(losses)),
                      "truncated": sum(s.tokens_out >= cfg.max_new_tokens for t in trajectories for s in t.steps)
                      / max(1, sum(len(t.steps) for t in trajectories)),
                      "completion_tokens": sum(s.tokens_out for t in trajectories for s in t.steps) / len(trajectories),
                      **{f"iou_step{k}": v for k, v in enumerate(per_step)}, **timing}
            if main_rank:
                log.write(json.dumps(record) + "\n")
                log.flush()
                with (out / "rollouts.jsonl").open("a") as viewer:  # the first prompt's group, for the Train tab
                    viewer.write(json.dumps(rollout_record(step + 1, batch, trajectories, rewards, advantages,
                                                           cfg.group_size)) + "\n")
                for key, value in record.items():
                    if key != "step":
                        reporter.metric(step + 1, key, value)
                reporter.progress(step + 1, cfg.max_steps, f"step {step + 1}/{cfg.max_steps} reward "
                                  f"{record['reward_mean']:.3f}")
                print(json.dumps(record), flush=True)
                if not_moving(kls):
                    print(f"warning: KL to the reference has stayed under {KL_STILL:g} for the last {KL_WINDOW} steps: "
                          f"the policy is not moving (lr {lr:g}); raise --lr (the 11 M toy needs 1e-4..5e-4)",
                          flush=True)
                if cfg.flywheel_below >= 0:
                    _flywheel(workspace, trajectories, rewards, cfg, family)
                if (step + 1) % cfg.save_steps == 0 or step + 1 == cfg.max_steps or stop["flag"]:
                    _save_checkpoint(model, optimizer, step + 1, checkpoint)
            if stop["flag"]:
                raise KeyboardInterrupt("stopped by SIGTERM after saving a checkpoint")
        accelerator.wait_for_everyone()
        if not main_rank:
            return out / "adapter"
        adapter = out / "adapter"
        model.save_pretrained(adapter)
        (adapter / "grpo_config.json").write_text(json.dumps(stored(cfg), indent=1))
        _card(adapter, out.name, base, cfg, lr, out / "metrics.jsonl", time.perf_counter() - began)
        model_id = register_grpo_model(db, cfg, base, adapter, family.name, out.name)
        print(json.dumps({"model_id": model_id, "adapter": str(adapter)}), flush=True)
    db.close()
    return out / "adapter"


def _card(folder: Path, name: str, base: Path, cfg: GRPOConfig, lr: float, metrics: Path, seconds: float) -> None:
    """The model card beside the saved adapter (``training.model_card``): how this GRPO run made it, with its
    curve in numbers (reward, KL and degradation over the first and last quarter of the steps logged)."""
    from training.model_card import duration, write_model_card

    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    quarter = max(1, len(records) // 4)

    def change(key: str) -> str:
        first = [r[key] for r in records[:quarter] if key in r]
        last = [r[key] for r in records[-quarter:] if key in r]
        if not first or not last:
            return "-"
        return f"{sum(first) / len(first):.3f} (first quarter) -> {sum(last) / len(last):.3f} (last quarter)"

    start = f"`{Path(cfg.init_adapter).resolve()}` (an SFT adapter, merged first) on `{base.resolve()}`" \
        if cfg.init_adapter else f"`{base.resolve()}`"
    facts = [
        ("starts from", start),
        ("method", f"GRPO through the IVT loop (T={cfg.steps}): {cfg.prompts} prompts x G={cfg.group_size} "
                   f"rollouts per step at temperature {cfg.temperature:g}, reward `{cfg.reward}`, loss "
                   f"`{cfg.loss_type}`, beta {cfg.beta:g}, lr {lr:g}; LoRA r {cfg.lora_r}, alpha {cfg.lora_alpha} "
                   f"on the language model's {LORA_TARGET_WORDS['attention']}"),
        ("prompts", f"`{cfg.dataset}/{cfg.split}` of workspace `{Path(cfg.workspace).resolve()}`, seed {cfg.seed}"),
        ("steps", f"{records[-1]['step'] if records else 0} of {cfg.max_steps}"),
        ("time", f"{duration(seconds)} of training in the process that finished it"),
        ("reward (mean of a step's rollouts)", change("reward_mean")),
        ("KL to the start", change("kl")),
        ("degradation per refinement step", change("degradation")),
        ("files", "`adapter_config.json`, `adapter_model.safetensors` (peft), `grpo_config.json` (the "
                  "configuration); the curve step by step: `metrics.jsonl` in the run's folder"),
    ]
    started = Path(cfg.init_adapter).resolve() if cfg.init_adapter else base
    parent = started.parent.name if started.name == "adapter" else started.name  # as register_grpo_model names it
    write_model_card(folder, title=f"{name}: GRPO of {parent}", kind="grpo", config=cfg, facts=facts,
                     config_file="grpo_config.json")


def _smaller_micro_batch(exc: Exception, current: int, cfg: GRPOConfig, processes: int) -> int:
    """The next micro-batch size after ``exc`` in the update, or ``exc`` raised again: only an out-of-memory
    error, only with ``micro_batch`` 0 (a size the user set is kept) and in one process (under DDP one rank
    retrying alone would wait forever for the others). Why not accelerate's ``find_executable_batch_size``:
    it collects garbage before every call (each step) and shrinks by 10 %; here the size found is kept for
    the next steps and halves. Its test for out-of-memory errors is the one used."""
    from accelerate.utils.memory import should_reduce_batch_size

    if cfg.micro_batch or processes > 1 or current <= 1 or not should_reduce_batch_size(exc):
        raise exc
    return current // 2


def register_grpo_model(db, cfg: GRPOConfig, base: Path, adapter: Path, family: str, name: str) -> int:
    """Register the trained model with its own id: the base, then the SFT adapter it started from (merged first)
    and its own adapter on top (``adapter_path`` "sft,grpo", which evaluation applies in that order). Its parent
    is the model it started from: the SFT model (registered now if it was not), else the base."""
    from ivt_core.store.models import register_model

    parent = register_model(db, base.name, str(base.resolve()), family)
    adapters = [str(adapter.resolve())]
    if cfg.init_adapter:
        start = Path(cfg.init_adapter).resolve()
        parent = register_model(db, start.parent.name if start.name == "adapter" else start.name,
                                str(base.resolve()), family, adapter_path=str(start), parent_id=parent)
        adapters.insert(0, str(start))
    return register_model(db, name, str(base.resolve()), family, adapter_path=",".join(adapters), parent_id=parent,
                          origin_job=cfg.job_id or None,
                          meta={"kind": "grpo", "config": stored(cfg), "init_adapter": cfg.init_adapter,
                                "adapters": adapters,
                                "note": "the adapters apply in order: the first merged into the base, the last on top"})


def _save_checkpoint(model, optimizer, step: int, checkpoint: Path) -> None:
    """Write adapter + optimizer state to a temporary folder, then swap it in: a kill mid-save keeps the old one."""
    import shutil

    import torch

    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"step": step, "optimizer": optimizer.state_dict()}, tmp / "state.pt")
    old = checkpoint.with_name(checkpoint.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if checkpoint.exists():
        checkpoint.rename(old)
    tmp.rename(checkpoint)
    shutil.rmtree(old, ignore_errors=True)


def _flywheel(workspace, trajectories, rewards, cfg: GRPOConfig, family) -> int:
    """Low-reward rollouts whose step-0 box is readable become pending traces (origin grpo)."""
    from ivt_core.teachers.geometric import GeometricTeacher
    from ivt_core.traces import traces_from_rollouts

    chosen = [t for t, r in zip(trajectories, rewards.tolist(), strict=True)
              if r < cfg.flywheel_below and t.steps and t.steps[0].box is not None]
    return traces_from_rollouts(workspace, chosen, GeometricTeacher(cfg.seed), family, cfg.steps) if chosen else 0


def config_from_args(argv: list[str] | None = None) -> GRPOConfig:
    return cli_config(GRPOConfig, "grpo", "GRPO through the IVT loop", argv)


def main(argv: list[str] | None = None) -> int:
    return run_main("grpo", train, config_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
