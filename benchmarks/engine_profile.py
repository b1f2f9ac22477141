"""Profile the cached engine on a GPU: which kernels and CPU operations its time goes to.

    python benchmarks/engine_profile.py --shape benchmarks/shapes/qwen3-vl-4b-shape.json --samples 128 \\
        --batch-size 128 --steps 1 --new-tokens 60

Runs the loop once to warm up, then once under ``torch.profiler`` (CPU and CUDA activity); prints the top
operations by CUDA time and by CPU time, the engine's own breakdown, and writes JSON (``--out``) with both
tables. Where ``loop_throughput.py`` says how long, this says on what.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import torch
    from loop_throughput import _samples, load
    from torch.profiler import ProfilerActivity, profile

    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.engine import CachedEngine
    from ivt_core.loop import LoopConfig, run_samples

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--image", default="640x480")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="build/bench/engine_profile.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("engine_profile.py: needs a CUDA GPU")
    grounder, _ = load(args, "cuda")
    size = tuple(int(v) for v in args.image.split("x"))
    samples, images = _samples(args.samples, size)
    config = LoopConfig(steps=args.steps, batch_size=args.batch_size, sampling=Sampling(max_new_tokens=args.new_tokens),
                        engine="cached")
    run_samples(grounder, samples[:8], config, images[:8])  # warm-up: kernels, graphs
    engine = CachedEngine(grounder.model, grounder.processor, grounder.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_samples(grounder, samples, config, images, engine=engine)
        torch.cuda.synchronize()
    events = prof.key_averages()
    tables = {}
    # by CUDA time (an operation with what it calls), by its own CUDA time (kernels: where the GPU's time goes,
    # each counted once), and by CPU time
    for key, attribute in (("cuda_time_total", "device_time_total"), ("self_cuda_time_total",
                                                                      "self_device_time_total"),
                           ("cpu_time_total", "cpu_time_total")):
        ranked = sorted(events, key=lambda e, a=attribute: getattr(e, a), reverse=True)[:args.top]
        tables[key] = [{"name": e.key[:90], "calls": e.count, "cuda_ms": e.device_time_total / 1000,
                        "self_cuda_ms": e.self_device_time_total / 1000,
                        "cpu_ms": e.cpu_time_total / 1000, "self_cpu_ms": e.self_cpu_time_total / 1000}
                       for e in ranked]
        print(f"\ntop {args.top} by {key.replace('_total', '').replace('_', ' ')}")
        print(f"{'operation':<92}{'calls':>7}{'CUDA ms':>10}{'self CUDA':>10}{'CPU ms':>10}{'self CPU':>10}")
        for row in tables[key]:
            print(f"{row['name']:<92}{row['calls']:>7}{row['cuda_ms']:>10.1f}{row['self_cuda_ms']:>10.1f}"
                  f"{row['cpu_ms']:>10.1f}{row['self_cpu_ms']:>10.1f}")
    total = sum(e.self_device_time_total for e in events) / 1000
    print(f"\nall kernels: {total:.1f} ms of CUDA time")
    stats = {k: v for k, v in engine.stats.items() if isinstance(v, int | float)}
    print("\nengine:", ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "tables": tables, "engine": stats,
                               "device": torch.cuda.get_device_name(), "torch": torch.__version__}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
