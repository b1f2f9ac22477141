"""Loop throughput: the plain loop against the cached engine on the same inputs, in one process.

    python benchmarks/loop_throughput.py --model assets/toy-model --samples 64 --steps 2 --batch-size 16
    python benchmarks/loop_throughput.py --shape ../shared/reference/qwen3-vl-4b-shape.json --samples 505 \\
        --steps 2 --batch-size 128 --plain-samples 8 --image 640x480 --new-tokens 60

Modes, each for the T-step loop and for a single shot (T=0):

- ``plain-1``: the loop written the obvious way: one sample at a time, the whole conversation re-encoded at
  every step, ``generate`` (``--plain-samples`` of them: it is slow);
- ``plain-B``: the same with batches of ``--plain-batch-size`` (left-padded, ``generate``);
- ``engine``: ``ivt_core.loop.run_samples`` on the cached engine (KV cache kept across steps, continuous
  batching), ``--batch-size`` conversations in flight.

``--shape`` builds random bf16 weights from a config (the kit's tokenizer and image processor, as
``train_throughput.py`` does) and forces ``--new-tokens`` per step (random weights never stop), like the
baseline in shared/reference/loop-baseline-h100.md. With ``--model`` the answers end where the model ends them
(at most ``--new-tokens``). Also reported: how many of the plain-1 samples got the very same answers from the
engine (greedy). Prints a table and writes JSON (``--out``).

Where the engine's time goes, per mode: CPU preparation (chat template, tokenizing, rope positions), cache
compaction, prefill and decode (on a GPU, the engine's stream's time between CUDA events: these parts are
queued without waiting for each other), and the loop around the engine
(rendering boxes, parsing answers); of the prefill, the CPU's reading of images chunk by chunk ("pixels": on a GPU,
overlapped with the previous chunk's encoding); the GPU's utilisation sampled every 0.1 s (NVML, when available);
and the floor the model's shape allows (``floor_ms``): the prefill's tokens at ``--peak-tflops`` (2 FLOP per parameter
per token, plus attention over the context), then the decode at ``--hbm-tbs`` (each decode step one read of the
weights and of every row's live KV cache) or at peak compute, whichever is slower.
The ratio measured / floor says how far the engine is from the hardware. Each lane count's first run is
reported as "cold" (kernels compiled and attention plans built for its shapes); the measured runs follow it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _samples(n: int, size: tuple[int, int]):
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample

    scenes = [make_sample(ShapesConfig(), 0, "test", i) for i in range(n)]
    samples, images = [], []
    for scene in scenes:
        sx, sy = size[0] / scene.image.width, size[1] / scene.image.height
        box = scene.bbox
        samples.append(Sample(scene.id, "shapes", "test", "", *size, scene.expression,
                              type(box)(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy)))
        images.append(scene.image.resize(size))
    return samples, images


def run_mode(grounder, mode: str, samples, images, steps: int, batch: int, new_tokens: int, device: str,
             lanes: int = 1) -> dict:
    """One mode's run; a line is printed as soon as it is done (a later mode may run out of memory)."""
    row = _run_mode(grounder, mode, samples, images, steps, batch, new_tokens, device, lanes)
    print(f"done: {mode} T={steps} batch {batch}: {row['ms_per_sample']:.1f} ms/sample, "
          f"breakdown {row['breakdown_ms_per_sample']}, peak {row['peak_mem_mb']:.0f} MB", flush=True)
    return row


def _run_mode(grounder, mode: str, samples, images, steps: int, batch: int, new_tokens: int, device: str,
              lanes: int) -> dict:
    import torch

    from ivt_core.grounders.base import Sampling
    from ivt_core.loop import LoopConfig, lane_engines, run_samples

    plain = mode.startswith("plain")
    config = LoopConfig(steps=steps, batch_size=batch, sampling=Sampling(max_new_tokens=new_tokens),
                        engine="plain" if plain else "cached")
    engines = None if plain else lane_engines(grounder, lanes)
    if device == "cuda":
        import gc

        gc.collect()  # the previous mode's engines and their caches
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    allocator = _allocator_counts(device)
    sampler = UtilisationSampler(device)
    start = time.perf_counter()
    trajectories = run_samples(grounder, samples, config, images, engine=engines)
    _sync(device)
    elapsed = time.perf_counter() - start
    utilisation = sampler.stop()
    allocator = {k: v - allocator[k] for k, v in _allocator_counts(device).items()}
    steps_done = [s for t in trajectories for s in t.steps]
    generated = sum(s.tokens_out for s in steps_done)
    stats = {key: sum(engine.stats.get(key, 0) for engine in engines)
             for key in ("prefill_tokens", "prefill_s", "prepare_s", "compact_s", "decode_s", "decode_steps",
                         "decode_kv_tokens", "turn_wait_s", "vision_patches", "vision_images", "pixels_s", "capture_s")
             } if engines else None
    if stats:
        prefill_tokens, prefill_s = stats["prefill_tokens"], stats["prefill_s"]  # lanes' prefills take turns
    else:  # plain: every step re-encodes its whole prompt; the time is not split
        prefill_tokens, prefill_s = sum(s.tokens_in for s in steps_done), None
    breakdown = None
    if stats:  # with lanes, each part summed over the lanes (a lane's CPU parts overlap another's GPU parts)
        parts = {name: stats[f"{name}_s"] for name in ("prepare", "compact", "prefill", "decode", "turn_wait")}
        parts["loop"] = elapsed * lanes - sum(parts.values())
        breakdown = {name: 1000 * value / len(samples) for name, value in parts.items()}  # ms per sample
        # of the prefill's time, the CPU's reading of images chunk by chunk (hidden behind the GPU's work on the
        # previous chunk, but for each step's first chunk)
        breakdown["pixels"] = 1000 * stats["pixels_s"] / len(samples)
        # the CPU capturing the decode graphs (the GPU meanwhile runs what is queued of the prefill)
        breakdown["capture"] = 1000 * stats["capture_s"] / len(samples)
        # the clock outside every lane's turn on the GPU (nothing queued there: each turn ends reading its tokens
        # back): before the first turn (the first step's preparation), between turns, after the last
        exclusive = len(engines) == 1 or all(engine.stream is not None for engine in engines)  # lanes on a GPU
        first = min(engine.stats["turn_first"] for engine in engines if engine.stats["turn_first"])
        last = max(engine.stats["turn_last"] for engine in engines if engine.stats["turn_last"])
        turns = sum(engine.stats["turn_s"] for engine in engines)
        breakdown["outside_turns"] = None if not exclusive else {
            name: 1000 * value / len(samples)
            for name, value in (("before", first - start), ("between", last - first - turns),
                                ("after", start + elapsed - last))}
    return {
        "breakdown_ms_per_sample": breakdown, "gpu_utilisation": utilisation, "lanes": lanes if engines else None,
        "decode_steps": stats["decode_steps"] if stats else None,
        "floor_ms_per_sample": floor_ms(grounder.model, prefill_tokens, generated,
                                        stats["decode_steps"] if stats else None,  # each lane reads the weights
                                        stats["decode_kv_tokens"] if stats else None, len(samples),
                                        stats["vision_patches"] if stats else None,
                                        stats["vision_images"] if stats else None)
        if FLOOR else None,
        "allocator": allocator,  # the caching allocator's counts during the run (CUDA: ``_allocator_counts``)
        "graphs": sum(engine.stats.get("graphs", 0) for engine in engines) if engines else None,  # decode graphs
        "graph_error": next((engine.stats["graph_error"] for engine in engines if "graph_error" in engine.stats),
                            None) if engines else None,  # the last capture that failed (then retried or eager)
        "mode": mode, "steps": steps, "batch": batch, "samples": len(samples), "seconds": elapsed,
        "ms_per_sample": 1000 * elapsed / len(samples), "generated_tokens": generated,
        "generated_tok_s": generated / elapsed, "prefill_tokens": prefill_tokens,
        "prefill_tok_s": prefill_tokens / prefill_s if prefill_s else None,
        "peak_mem_mb": _peak_mb(device), "answers": {t.sample_id: [s.raw_text for s in t.steps] for t in trajectories},
    }


def _allocator_counts(device: str) -> dict:
    """What the CUDA caching allocator did so far: memory mapped from the driver and given back (``cudaMalloc`` /
    ``cudaFree``, or expandable segments' maps), retries after freeing its cache (each waits for the GPU), and
    waits for every stream; empty on the CPU."""
    import torch

    if device != "cuda":
        return {}
    stats = torch.cuda.memory_stats()
    return {key: stats.get(key, 0) for key in ("num_device_alloc", "num_device_free", "num_alloc_retries",
                                                "num_sync_all_streams")}


class UtilisationSampler:
    """The GPU's utilisation (NVML, through torch) sampled every 0.1 s on a thread; ``stop`` gives the mean, or
    None where it cannot be read (a CPU, no NVML)."""

    def __init__(self, device: str):
        import threading

        import torch

        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = None
        if device == "cuda":
            try:
                torch.cuda.utilization()
            except Exception:  # noqa: BLE001 - no NVML here: no figure, said as such
                return
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.1):
            self.samples.append(torch.cuda.utilization())

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return sum(self.samples) / len(self.samples) if self.samples else None


FLOOR: dict = {}  # peak_tflops, hbm_tbs: set from the command line


def floor_ms(model, prefill_tokens: int, generated_tokens: int, decode_steps: int | None, kv_tokens: int | None,
             samples: int, vision_patches: int | None = None, vision_images: int | None = None) -> float:
    """The least time per sample the model's shape allows for this work on a GPU of ``FLOOR``'s peak compute and
    memory bandwidth. The prefill is bound by compute: the language model's matrix products for its tokens (2 FLOP
    per non-embedding parameter) and their attention over the mean conversation, plus the vision tower's for its
    patches (``vision_patches`` in ``vision_images`` images, the engine's counts: 4 per image token with a 2x2
    merge) and their attention within each image, the patch mergers at the merged rate, all at peak. The decode
    is bound by memory: each decode step reads the weights once and every row its live KV cache (``kv_tokens``:
    the entries all decode steps attended to, the engine's ``decode_kv_tokens``), unless its products take
    longer. Prefill and decode do not run at once, so the floor is their sum. (Before session 11 it was the
    larger of all tokens' compute and the weight reads alone, which left out the KV cache; before session 12 the
    vision tower's parameters were counted once per language token instead of once per patch, which undercounts
    an image's vision compute: 0.99 instead of 2.83 TFLOP per sample for the 4B shape at T=2, 640x480.)"""
    text = model.config.get_text_config()
    embedding = model.get_input_embeddings().weight
    vision = next((m for m in model.modules() if type(m).__name__.endswith("VisionModel")), None)
    vision_params = sum(p.numel() for p in vision.parameters()) if vision is not None and vision_patches else 0
    merger_params = sum(p.numel() for name, m in vision.named_children() if "merger" in name
                        for p in m.parameters()) if vision_params else 0
    params = sum(p.numel() for p in model.parameters()) - embedding.numel() - vision_params
    context = prefill_tokens / max(1, samples)  # a conversation's length at its end, roughly
    dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = 2 * params + 4 * text.num_hidden_layers * text.num_attention_heads * dim * context / 2
    vision_flops = 0.0
    if vision_params:
        config = model.config.vision_config
        merge = getattr(config, "spatial_merge_size", 2) ** 2
        per_image = vision_patches / max(1, vision_images or 1)
        vision_flops = (vision_patches * (2 * (vision_params - merger_params) + 4 * config.depth * config.hidden_size
                                          * per_image)  # attention: each patch over its image's patches
                        + vision_patches / merge * 2 * merger_params)
    peak, bandwidth = FLOOR["peak_tflops"] * 1e12, FLOOR["hbm_tbs"] * 1e12
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = 2 * text.num_hidden_layers * text.num_key_value_heads * dim * embedding.element_size()
    decode_memory_s = ((decode_steps or 0) * weights_bytes + (kv_tokens or 0) * kv_bytes) / bandwidth
    seconds = ((prefill_tokens * per_token + vision_flops) / peak
               + max(generated_tokens * per_token / peak, decode_memory_s))
    return 1000 * seconds / samples


def load(args, device: str):
    import torch

    from ivt_core.families import FAMILIES
    from ivt_core.grounders.decode_attention import enable_decode_attention
    from ivt_core.grounders.fast_vision import enable_fast_vision
    from ivt_core.grounders.fused_kernels import enable_fused_kernels
    from ivt_core.grounders.processing import load_processor
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    if args.shape:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from train_throughput import build_shape

        model_dir, model = build_shape(Path(args.shape), Path("build/bench/shape-kit"), device)
        model.eval()
        enable_fast_vision(model)
        enable_fused_kernels(model)  # on a GPU where liger-kernel is installed, unless IVT_FUSED_KERNELS=0
        enable_decode_attention(model)  # on a GPU, unless IVT_DECODE_KERNEL=0
        model.generation_config.min_new_tokens = args.new_tokens  # random weights never stop by themselves
        model.generation_config.eos_token_id = model.config.text_config.eos_token_id
        processor = load_processor(model_dir, "qwen3_vl")
        return TransformersGrounder(model, processor, FAMILIES["qwen3_vl"], "shape", device), str(args.shape)
    torch.manual_seed(0)
    return TransformersGrounder.load(args.model, device=device), args.model


def main() -> None:
    import torch
    import transformers

    from ivt_core.grounders.fused_kernels import fused_on

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="local checkpoint folder (default: the shipped toy model)")
    source.add_argument("--shape", default=None, help="config JSON: random weights of that shape")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--plain-samples", type=int, default=8, help="samples for the one-at-a-time plain loop")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", default="16",
                        help="conversations in flight, or auto (as ``ivt eval --batch-size auto`` sizes it)")
    parser.add_argument("--image", default=None, help="WxH (default: 640x480 with --shape, 224x224 otherwise)")
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--plain-batch-size", type=int, default=None, help="batch of plain-B (default: --batch-size)")
    parser.add_argument("--plain-batched-samples", type=int, default=None,
                        help="samples for plain-B (default: all; it is slow too)")
    parser.add_argument("--skip-plain-batched", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM)")
    parser.add_argument("--hbm-tbs", type=float, default=4.8, help="the GPU's memory bandwidth in TB/s (H200)")
    parser.add_argument("--compile", action="store_true",
                        help="experiment: torch.compile each decoder layer of the language model (dynamic shapes)")
    parser.add_argument("--no-cudnn-attention", action="store_true",
                        help="experiment: SDPA without cuDNN's kernels (flash, memory-efficient, math only)")
    parser.add_argument("--lanes", default="1,2", help="the engine's lanes (comma-separated: one engine row each; "
                        "2: CPU preparation of one lane overlapped with the other's GPU work)")
    parser.add_argument("--chunk-tokens", type=int, default=None,
                        help="the engine's new tokens per prefill forward (default: engine.PREFILL_CHUNK_TOKENS)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="experiment: Python's thread switch interval in seconds (sys.setswitchinterval; 0.005 "
                        "by default): how long a lane's thread may wait for the GIL while the other lane runs Python")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measured runs of the T-step loop for each lane count (the machine's run-to-run spread)")
    parser.add_argument("--out", default="build/bench/loop_throughput.json")
    args = parser.parse_args()
    FLOOR.update(peak_tflops=args.peak_tflops, hbm_tbs=args.hbm_tbs)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.chunk_tokens:
        from ivt_core.grounders import engine

        engine.PREFILL_CHUNK_TOKENS = args.chunk_tokens
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if not args.shape and not args.model:
        from ivt_core.bootstrap import toy_model_path

        args.model = str(toy_model_path())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = tuple(int(v) for v in (args.image or ("640x480" if args.shape else "224x224")).split("x"))
    grounder, source_name = load(args, device)
    if args.compile:
        import torch._dynamo

        from ivt_core.grounders.engine import _inner_model

        torch._dynamo.config.allow_unspec_int_on_nn_module = True  # one compiled layer for all 36 (layer_idx)
        torch._dynamo.config.recompile_limit = 64

        for layer in _inner_model(grounder.model).language_model.layers:
            layer.compile(dynamic=True)
        source_name += " (decoder layers compiled)"
    samples, images = _samples(args.samples, size)
    few = min(args.plain_samples, args.samples)
    lanes = [int(v) for v in args.lanes.split(",")]
    if args.batch_size == "auto":  # sized as the loop sizes it, from the free memory with the model loaded
        from ivt_core.grounders.batch_size import auto_batch_size

        args.batch_size = auto_batch_size(grounder.model, grounder.processor, size, args.steps, args.new_tokens,
                                          device, most=512 * max(lanes))
        print(f"--batch-size auto: {args.batch_size}", flush=True)
    args.batch_size = int(args.batch_size)
    # a first run of each lane count at the measured batch and T, reported as "cold": Triton compiles its kernels
    # for the shapes it meets (the decode kernel is split on few rows, not on many) and cuDNN builds an attention
    # plan per shape, in each lane's thread (``loop.lane_thread``: the same threads in the measured run). A warm-up
    # of 2 rows in the main thread left all that in the first measured run (docs/LOG.md, sessions 15 and 16)
    rows = []
    run_mode(grounder, "warm-up", samples[:2], images[:2], args.steps, 2, args.new_tokens, device)
    warm = min(args.batch_size, args.samples)
    for count in lanes:
        rows.append(run_mode(grounder, "cold" if count == 1 else f"cold-L{count}", samples[:warm], images[:warm],
                             args.steps, args.batch_size, args.new_tokens, device, count))
    for steps in (args.steps, 0):
        if few:
            rows.append(run_mode(grounder, "plain-1", samples[:few], images[:few], steps, 1, args.new_tokens, device))
        if not args.skip_plain_batched:
            batch = args.plain_batch_size or args.batch_size
            many = min(args.plain_batched_samples or args.samples, args.samples)
            rows.append(run_mode(grounder, f"plain-{batch}", samples[:many], images[:many], steps, batch,
                                 args.new_tokens, device))
        for repeat in range(args.repeat if steps else 1):
            for count in lanes:
                rows.append(run_mode(grounder, ("engine" if count == 1 else f"engine-L{count}")
                                     + (f"#{repeat + 1}" if repeat else ""), samples, images, steps,
                                     args.batch_size, args.new_tokens, device, count))
    by = {(r["mode"], r["steps"]): r for r in rows}
    for r in rows:
        if r["steps"]:
            single = by.get((r["mode"], 0))
            r["loop_vs_single"] = r["ms_per_sample"] / single["ms_per_sample"] if single else None
    engine_loop = min((r for r in rows if r["mode"].startswith("engine") and r["steps"] == args.steps),
                      key=lambda r: r["ms_per_sample"])
    plain_one = by.get(("plain-1", args.steps))
    same = sum(engine_loop["answers"][k] == v for k, v in plain_one["answers"].items()) if plain_one else None
    where = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"loop throughput: {source_name}, {size[0]}x{size[1]}, T={args.steps}, {args.samples} samples, "
          f"{where}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'mode':<12}{'T':>3}{'batch':>7}{'samples':>9}{'ms/sample':>11}{'gen tok/s':>11}{'prefill tok/s':>15}"
          f"{'T/single':>10}{'peak MB':>10}")
    for r in rows:
        prefill = f"{r['prefill_tok_s']:.0f}" if r["prefill_tok_s"] else "-"
        ratio = f"{r['loop_vs_single']:.2f}x" if r.get("loop_vs_single") else ""
        print(f"{r['mode']:<12}{r['steps']:>3}{r['batch']:>7}{r['samples']:>9}{r['ms_per_sample']:>11.1f}"
              f"{r['generated_tok_s']:>11.0f}{prefill:>15}{ratio:>10}{r['peak_mem_mb']:>10.0f}")
    print(f"\nwhere the engine's time goes (ms per sample; floor at {args.peak_tflops:.0f} TFLOP/s and "
          f"{args.hbm_tbs} TB/s)")
    print(f"{'mode':<12}{'T':>3}{'prepare':>9}{'compact':>9}{'prefill':>9}{'decode':>9}{'wait':>9}{'loop':>8}{'total':>8}{'floor':>8}"
          f"{'x floor':>9}{'GPU util':>10}{'pixels':>8}{'capture':>9}")
    for r in rows:
        if r["breakdown_ms_per_sample"]:
            b, util = r["breakdown_ms_per_sample"], r["gpu_utilisation"]
            print(f"{r['mode']:<12}{r['steps']:>3}"
                  + "".join(f"{b[k]:>9.1f}" for k in ("prepare", "compact", "prefill", "decode", "turn_wait"))
                  + f"{b['loop']:>8.1f}{r['ms_per_sample']:>8.1f}{r['floor_ms_per_sample']:>8.1f}"
                  f"{r['ms_per_sample'] / r['floor_ms_per_sample']:>8.1f}x"
                  + (f"{util:>9.0f}%" if util is not None else f"{'-':>10}") + f"{b['pixels']:>8.1f}"
                  + f"{b.get('capture', 0.0):>9.1f}")
    print("(pixels: of the prefill, the CPU reading each chunk's images, overlapped with the previous chunk's "
          "GPU work; capture: the CPU capturing the decode graphs, overlapped with the prefill's queued tail)")
    for r in rows:
        outside = (r["breakdown_ms_per_sample"] or {}).get("outside_turns")
        if outside:
            print(f"{r['mode']:<12}{r['steps']:>3}  outside the GPU turns (ms/sample): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in outside.items())
                  + "; allocator: " + ", ".join(f"{k.removeprefix('num_')} {v}" for k, v in r["allocator"].items()))
    speedups = {mode: by[(mode, args.steps)]["ms_per_sample"] / engine_loop["ms_per_sample"]
                for mode, steps in by if steps == args.steps and mode != engine_loop["mode"]
                and not mode.startswith("cold")}
    if args.repeat > 1:  # every measured run, not only the best: the spread is the machine's
        import statistics

        for count in lanes:
            name = "engine" if count == 1 else f"engine-L{count}"
            runs = [r["ms_per_sample"] for r in rows if r["steps"] == args.steps and r["mode"].split("#")[0] == name]
            print(f"{name} T={args.steps}, {len(runs)} runs: " + ", ".join(f"{v:.1f}" for v in runs)
                  + f" ms/sample (median {statistics.median(runs):.1f})")
    print(f"{engine_loop['mode']} vs " + ", ".join(f"{mode}: {x:.2f}x faster" for mode, x in speedups.items()))
    if plain_one:
        print(f"same answers as plain-1 (greedy): {same} of {len(plain_one['answers'])} samples")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "device": where, "torch": torch.__version__, "transformers": transformers.__version__,
        "source": source_name, "image": list(size), "steps": args.steps, "new_tokens": args.new_tokens,
        "rows": [{k: v for k, v in r.items() if k != "answers"} for r in rows], "engine_speedup": speedups,
        "same_answers": [same, len(plain_one["answers"])] if plain_one else None,
        "fused_kernels": fused_on(grounder.model), "argv": sys.argv[1:]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
