"""Profile the cached engine on a GPU: which kernels and CPU operations its time goes to.

    python benchmarks/engine_profile.py --shape benchmarks/shapes/qwen3-vl-4b-shape.json --samples 128 \\
        --batch-size 128 --steps 1 --new-tokens 60

Runs the loop once to warm up, then once under ``torch.profiler`` (CPU and CUDA activity); prints the top
operations by CUDA time and by CPU time, the kernels of each phase of a step (compaction, the vision tower, the
language model's prefill, the decode: each kernel counted under the phase whose code launched it), the engine's
own breakdown, and writes JSON (``--out``) with the tables. Where ``loop_throughput.py`` says how long, this says
on what.
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
    parser.add_argument("--eager-decode", action="store_true",
                        help="decode without CUDA graphs (slower: the decode's kernels launched one by one)")
    parser.add_argument("--trace", default=None,
                        help="where to write the profiler's timeline (Chrome trace JSON; default: beside --out)")
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
    engine = CachedEngine(grounder.model, grounder.processor, grounder.device, use_graphs=not args.eager_decode)
    _mark_phases(engine, grounder.model)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_samples(grounder, samples, config, images, engine=engine)
        torch.cuda.synchronize()
    trace = args.trace or str(Path(args.out).with_suffix(".trace.json"))
    Path(trace).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(trace)
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
    trace_events = json.loads(Path(trace).read_text())["traceEvents"]
    tables["by_phase"] = by_phase(trace_events)
    for phase, rows in tables["by_phase"].items():
        spent = sum(r["cuda_ms"] for r in rows["all"])
        print(f"\n{phase}: {spent:.1f} ms of kernels ({rows['kernels']} launches); top {args.top}")
        for row in rows["all"][:args.top]:
            print(f"  {row['name']:<96}{row['calls']:>7}{row['cuda_ms']:>10.1f}{100 * row['cuda_ms'] / spent:>6.1f}%")
        tables["by_phase"][phase]["all"] = rows["all"][:args.top]
    tables["gpu_idle"] = idle = idle_gaps(trace_events, args.top)
    print(f"\nGPU idle: {idle['idle_ms']:.1f} of {idle['span_ms']:.1f} ms ({idle['gaps']} gaps of >= {GAP_US} us), by "
          f"the phase the CPU was in, with the CPU operations that ran during those gaps (nested ones counted in "
          f"each; top {args.top})")
    for phase, ms in idle["by_phase"].items():
        print(f"  {phase:<50}{ms:>10.1f} ms")
        for row in idle["cpu_ops"].get(phase, [])[:8]:
            print(f"      {row['name']:<80}{row['ms']:>10.1f} ms")
    stats = {k: v for k, v in engine.stats.items() if isinstance(v, int | float)}
    print("\nengine:", ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "tables": tables, "engine": stats,
                               "device": torch.cuda.get_device_name(), "torch": torch.__version__}, indent=1))
    print(f"wrote {out}")


PHASES = ("ivt:compact", "ivt:vision", "ivt:decode", "ivt:prefill", "ivt:gpu_step")  # innermost first
NAMES = {"ivt:compact": "compaction", "ivt:vision": "vision tower", "ivt:decode": "decode",
         "ivt:prefill": "prefill (language model)", "ivt:gpu_step": "GPU step, outside the forwards (pixels, masks)",
         None: "outside a step (the loop, preparation)"}
GAP_US = 5  # shorter pauses between two kernels are the GPU's own (launch latency): not counted as idle


def _ranged(name: str, fn):
    from torch.profiler import record_function

    def inner(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)

    return inner


def _mark_phases(engine, model) -> None:
    """Profiler ranges around the engine's phases (on this engine and model only: instances, not classes)."""
    engine._compact = _ranged("ivt:compact", engine._compact)
    engine._decode = _ranged("ivt:decode", engine._decode)
    engine._on_gpu = _ranged("ivt:gpu_step", engine._on_gpu)
    engine._prefill = _ranged("ivt:prefill", engine._prefill)
    for module in model.modules():
        if type(module).__name__.endswith("VisionModel"):
            module.forward = _ranged("ivt:vision", module.forward)


def by_phase(trace_events: list[dict]) -> dict:
    """Kernel time per phase, from the profiler's timeline (Chrome trace events): each kernel, copy and fill under
    the innermost ``PHASES`` range the CPU was in when it launched it (the launch found by the correlation id the
    launch and the kernel share: a runtime call such as ``cudaLaunchKernel`` or ``cudaGraphLaunch``, or a driver
    call, ``cuLaunchKernel``, as Triton's kernels are launched; the profiler's ``events()`` attach the latter to
    no operation, so the engine's own kernels, the compaction's gather and the decode's attention, were missing)."""
    from collections import defaultdict

    launches = {e["args"]["correlation"]: e["ts"] for e in trace_events
                if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver")
                and "correlation" in e.get("args", {})}
    phase = _phase_at(trace_events)
    spent: dict = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    for event in trace_events:
        if event.get("ph") != "X" or event.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset"):
            continue
        launched = launches.get(event.get("args", {}).get("correlation"))
        entry = spent[phase(launched) if launched is not None else NAMES[None]][event["name"][:96]]
        entry[0] += 1
        entry[1] += event["dur"] / 1000
    return {where: {"kernels": sum(c for c, _ in rows.values()),
                    "all": [{"name": n, "calls": c, "cuda_ms": ms}
                            for n, (c, ms) in sorted(rows.items(), key=lambda kv: -kv[1][1])]}
            for where, rows in spent.items()}


def _phase_at(trace_events: list[dict]):
    """A function: the name of the innermost ``PHASES`` range the CPU was in at a moment (``NAMES[None]`` outside)."""
    ranges = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in trace_events
                    if e.get("ph") == "X" and e.get("cat") == "user_annotation" and e["name"] in PHASES)

    def phase(moment: float) -> str:
        inside = [(end - start, name) for start, end, name in ranges if start <= moment <= end]
        return NAMES[min(inside)[1] if inside else None]

    return phase


def idle_gaps(trace_events: list[dict], top: int) -> dict:
    """Where the GPU waits, from the profiler's timeline (Chrome trace events): the gaps between the GPU's kernels,
    copies and fills (all streams merged, first to last), each attributed to the innermost engine phase the CPU was
    in at the gap's middle (``PHASES``; outside them: the loop and the preparation) and, per phase, to the CPU
    operations that ran during the gaps (what the CPU was busy with while the GPU had nothing to do). (The
    profiler's ``events()`` do not carry every device event: read from them, most gaps were not seen.)"""
    import bisect
    from collections import defaultdict

    gpu = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace_events
                 if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    if not gpu:
        return {"idle_ms": 0.0, "span_ms": 0.0, "gaps": 0, "by_phase": {}, "cpu_ops": {}}
    gaps, busy_until = [], gpu[0][1]
    for start, end in gpu[1:]:
        if start - busy_until >= GAP_US:
            gaps.append((busy_until, start))
        busy_until = max(busy_until, end)
    phase = _phase_at(trace_events)
    cpu = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in trace_events
                 if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "cuda_runtime", "cuda_driver"))
    starts = [start for start, _, _ in cpu]
    longest = max((end - start for start, end, _ in cpu), default=0)
    by_phase: dict = defaultdict(float)
    by_op: dict = defaultdict(lambda: defaultdict(float))
    for start, end in gaps:
        where = phase((start + end) / 2)
        by_phase[where] += (end - start) / 1000
        for op_start, op_end, name in cpu[bisect.bisect_left(starts, start - longest):bisect.bisect_right(starts, end)]:
            overlap = min(end, op_end) - max(start, op_start)
            if overlap > 0:
                by_op[where][name[:80]] += overlap / 1000
    return {"idle_ms": sum(end - start for start, end in gaps) / 1000, "span_ms": (busy_until - gpu[0][0]) / 1000,
            "gaps": len(gaps), "by_phase": dict(sorted(by_phase.items(), key=lambda kv: -kv[1])),
            "cpu_ops": {where: [{"name": n, "ms": ms} for n, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:top]]
                        for where, ops in by_op.items()}}


if __name__ == "__main__":
    main()
