"""Training throughput: SFT and GRPO steps on the toy model or a model shape, samples/s and peak memory.

    python benchmarks/train_throughput.py --model assets/toy-model --steps 5            # CPU or GPU
    python benchmarks/train_throughput.py --shape ../shared/reference/qwen3-vl-4b-shape.json --image 640x480
    python benchmarks/train_throughput.py --grpo-only --model assets/toy-model-sft --prompts 16 --group 8

``--shape`` builds random weights from a config (with the tiny-model kit's tokenizer and image processor; the
shape's special-token ids are remapped to the kit's). SFT: one LoRA step (r 64 on the language model's
attention) on a corrective conversation with three images (as a 2-step trace), bf16 on GPU, 4-bit NF4 too when
bitsandbytes is importable. GRPO: G rollouts of T=2 steps through the real loop (sampling, ``--new-tokens``
forced per step since random weights never stop) and one policy step. With a real checkpoint (no ``--shape``),
also the GRPO trainer itself (``training.grpo.train``, its defaults, ``--prompts`` x ``--group`` rollouts of T=2,
``--grpo-steps`` steps on a generated shapes train split; the first step, a warm-up, left out): seconds per step
and where they go (rollout, and inside it the engine's CPU preparation, prefill and decode; building the training
tensors; the policy update). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_shape(shape_file: Path, out: Path, device: str):
    """(folder with the kit's tokenizer and processor, random-weight model of the shape on ``device``)."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen3VLConfig

    from ivt_core.tinykit import TinySpec, build_tiny_model

    build_tiny_model(out, "qwen3_vl", TinySpec(max_pixels=640 * 480 * 2))
    kit = json.loads((out / "config.json").read_text())
    shape = json.loads(shape_file.read_text())
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        shape[key] = kit[key]
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        shape["text_config"][key] = kit["text_config"].get(key)
    config = Qwen3VLConfig(**{k: v for k, v in shape.items() if k not in ("architectures", "model_type")})
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    return out, model


def conversation(image, expression: str):
    text = '{"bbox_2d": [100, 200, 300, 400]}'
    return [
        {"role": "user", "content": [{"type": "image", "image": image},
                                     {"type": "text", "text": f"Locate {expression}."}]},
        {"role": "assistant", "content": [{"type": "text", "text": text}]},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Check the box."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Move the left edge right. " + text}]},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Check the box."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The box is correct. " + text}]},
    ]


def bench_sft(model_dir: Path, size, batch: int, steps: int, four_bit: bool, device: str, given=None) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders.fast_vision import enable_fast_vision
    from ivt_core.grounders.processing import load_processor
    from ivt_core.supervision import build_example, collate

    processor = load_processor(model_dir, "qwen3_vl")
    kwargs = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32}
    if four_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=kwargs["dtype"])
    model = given if given is not None else AutoModelForImageTextToText.from_pretrained(str(model_dir), **kwargs)
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=128,
                                             target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"))
    if not four_bit:
        model.to(device)
    enable_fast_vision(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scenes = [make_sample(ShapesConfig(), 0, "train", i) for i in range(batch)]
    examples = [build_example(processor, conversation(s.image.resize(size), s.expression), {3, 5}) for s in scenes]
    batch_tensors = {k: v.to(device) for k, v in collate(examples, processor.tokenizer.pad_token_id).items()}
    tokens = int(batch_tensors["attention_mask"].sum())
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**batch_tensors).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    per_step = sum(times) / len(times)
    return {"mode": f"sft lora r64{' 4-bit' if four_bit else ''}", "batch": batch, "tokens_per_batch": tokens,
            "s_per_step": per_step, "samples_per_s": batch / per_step, "peak_mem_mb": _peak_mb(device)}


def bench_grpo(model_dir: Path, size, group: int, new_tokens: int, device: str, given=None) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.families import FAMILIES
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.fast_vision import enable_fast_vision
    from ivt_core.grounders.processing import load_processor
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_samples
    from ivt_core.policy_gradient import advantages as group_advantages
    from ivt_core.policy_gradient import grpo_loss, token_logprobs
    from ivt_core.rewards import final_iou_format
    from ivt_core.supervision import build_example, collate

    processor = load_processor(model_dir, "qwen3_vl")
    model = given if given is not None else AutoModelForImageTextToText.from_pretrained(
        str(model_dir), dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=128,
                                             target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"))
    model.to(device)
    enable_fast_vision(model)
    model.generation_config.min_new_tokens = new_tokens  # random weights never stop by themselves
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    grounder = TransformersGrounder(model, processor, FAMILIES["qwen3_vl"], "bench", device)
    scene = make_sample(ShapesConfig(), 0, "train", 0)
    image = scene.image.resize(size)
    samples = [Sample(f"s{i}", "b", "train", "", *size, scene.expression, scene.bbox) for i in range(group)]
    loop = LoopConfig(steps=2, batch_size=group, lanes=1,  # as GRPO's rollouts: one engine
                      sampling=Sampling(max_new_tokens=new_tokens, do_sample=True, temperature=1.0))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    trajectories = run_samples(grounder, samples, loop, [image] * group, keep_conversations=True)
    if device == "cuda":
        torch.cuda.synchronize()
    rollout = time.perf_counter() - start
    advantages = group_advantages(torch.tensor([final_iou_format(t) for t in trajectories]) + torch.randn(group) * 1e-3,
                                  group)
    start = time.perf_counter()
    examples = [build_example(processor, t.conversation, {i for i, m in enumerate(t.conversation)
                                                           if m["role"] == "assistant"}) for t in trajectories]
    tensors = {k: v.to(device) for k, v in collate(examples, processor.tokenizer.pad_token_id).items()}
    labels = tensors.pop("labels")
    with torch.no_grad(), model.disable_adapter():
        ref, _ = token_logprobs(model(**tensors).logits, labels)
    policy, mask = token_logprobs(model(**tensors).logits, labels)
    loss, _ = grpo_loss(policy, policy.detach(), ref, mask, advantages.to(device), 0.04)
    loss.backward()
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    update = time.perf_counter() - start
    return {"mode": f"grpo G={group} T=2 ({new_tokens} tok/step)", "batch": group, "rollout_s": rollout,
            "update_s": update, "s_per_step": rollout + update, "samples_per_s": group / (rollout + update),
            "peak_mem_mb": _peak_mb(device)}


def bench_grpo_trainer(model_dir: Path, prompts: int, group: int, steps: int, max_new_tokens: int | None = None,
                       workspace: Path | None = None, run=None, **settings) -> dict:
    """``steps`` steps of the real GRPO trainer (its defaults, and ``settings``: other ``GRPOConfig`` fields);
    ``run`` wraps the call (``grpo_profile.py``: under cProfile)."""
    import tempfile

    from ivt_core.config.training import GRPOConfig
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.workspace import Workspace
    from training.grpo import train

    if workspace is None:
        workspace = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
        write_shapes_split(Workspace.open(workspace), "train", max(200, prompts * 4), seed=0)
    out = Path(workspace) / "models" / f"grpo-bench-{int(time.time())}"
    if max_new_tokens:
        settings["max_new_tokens"] = max_new_tokens
    cfg = GRPOConfig(workspace=str(workspace), base=str(model_dir), out=str(out), prompts=prompts, group_size=group,
                     max_steps=steps, save_steps=10_000, **settings)
    (run or (lambda f, c: f(c)))(train, cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = records[1:] or records
    parts = [k for k in ("rollout_s", "rollout_prepare_s", "rollout_prefill_s", "rollout_decode_s", "prepare_s",
                         "update_s") if k in steady[0]]
    mean = {k: sum(r[k] for r in steady) / len(steady) for k in parts}
    s_per_step = mean["rollout_s"] + mean["prepare_s"] + mean["update_s"]
    return {"mode": f"grpo trainer {prompts}x{group} T=2", "batch": prompts * group, "s_per_step": s_per_step,
            "samples_per_s": prompts * group / s_per_step, "peak_mem_mb": _peak_mb(_device()), "parts": mean,
            "steps": len(records), "records": records,
            "completion_tokens": sum(r["completion_tokens"] for r in steady) / len(steady)}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def print_parts(row: dict) -> None:
    print(f"{'part of a GRPO step':<34}{'s':>9}")
    for name, value in row["parts"].items():
        print(f"{name:<34}{value:>9.3f}")
    print(f"{'step':<34}{row['s_per_step']:>9.3f}   (mean of steps 2..{row['steps']}, "
          f"{row['completion_tokens']:.0f} generated tokens per rollout)")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="assets/toy-model")
    parser.add_argument("--shape", default=None)
    parser.add_argument("--image", default="224x224", help="WxH of the training images")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16, help="GRPO trainer: prompts per step")
    parser.add_argument("--grpo-steps", type=int, default=5, help="GRPO trainer: steps (the first is a warm-up)")
    parser.add_argument("--grpo-only", action="store_true", help="only the GRPO trainer row")
    parser.add_argument("--cudnn-attention", action="store_true",
                        help="experiment: let the GRPO trainer use cuDNN's attention (it turns it off)")
    parser.add_argument("--out", default="build/bench/train_throughput.json")
    args = parser.parse_args()
    device = _device()
    size = tuple(int(v) for v in args.image.split("x"))
    given = None
    if args.shape:
        model_dir, given = build_shape(Path(args.shape), Path("build/bench/shape-kit"), device)
    else:
        model_dir = Path(args.model)
    if args.cudnn_attention:
        import training.grpo

        training.grpo.CUDNN_ATTENTION = True
    if args.grpo_only:
        rows = [bench_grpo_trainer(model_dir, args.prompts, args.group, args.grpo_steps)]
        _report(rows, device, model_dir, args)
        print_parts(rows[0])
        return
    rows = [bench_sft(model_dir, size, args.batch, args.steps, False, device, given)]
    try:
        import bitsandbytes  # noqa: F401

        if given is None:
            rows.append(bench_sft(model_dir, size, args.batch, args.steps, True, device))
        else:
            rows.append({"mode": "sft lora r64 4-bit", "skipped": "random shapes are built in bf16 on the device"})
    except ImportError:
        rows.append({"mode": "sft lora r64 4-bit", "skipped": "bitsandbytes is not installed here"})
    if given is not None:
        import gc

        given = None
        gc.collect()
        torch.cuda.empty_cache()
        model_dir, given = build_shape(Path(args.shape), Path("build/bench/shape-kit"), device)
    rows.append(bench_grpo(model_dir, size, args.group, args.new_tokens, device, given))
    if given is None:
        rows.append(bench_grpo_trainer(model_dir, args.prompts, args.group, args.grpo_steps))
    _report(rows, device, model_dir, args)
    if given is None:
        print_parts(rows[-1])


def _report(rows: list[dict], device: str, model_dir: Path, args) -> None:
    import torch

    where = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"{'mode':<34}{'batch':>6}{'s/step':>9}{'samples/s':>11}{'peak MB':>10}"
          f"   ({where}, {model_dir}, {args.image})")
    for r in rows:
        if "skipped" in r:
            print(f"{r['mode']:<34}  skipped: {r['skipped']}")
        else:
            print(f"{r['mode']:<34}{r['batch']:>6}{r['s_per_step']:>9.3f}{r['samples_per_s']:>11.2f}"
                  f"{r['peak_mem_mb']:>10.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": where, "model": str(model_dir), "image": args.image,
                               "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
