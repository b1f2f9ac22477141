"""Web-app latency: the Explore step slider on a toy-model run, and the Traces queue with many traces stored.

    python benchmarks/ui_latency.py [--traces 100000] [--samples 20] [--repeat 30] [--json build/ui_latency.json]

Measures the server-side handlers the browser calls (what a slider move or a review costs, excluding the
network and the browser's drawing): Explore's ``show_step`` (image with the step's box, text, IoU curve) over
every step of a toy-model run (evaluated here, T=2, on the CPU), and the Traces tab's first view, next trace,
counts, full-text search and approve-and-advance with ``--traces`` traces in the store (copies of synthesized
ones). Prints a table (median and p95 in ms) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(fn, repeat: int) -> dict:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
            "n": repeat}


def fill_traces(workspace, run_id: int, total: int) -> int:
    """Synthesize traces from the run, then copy them (as other teachers) until ``total`` are stored."""
    from ivt_core.teachers.geometric import GeometricTeacher
    from ivt_core.traces import SynthConfig, synthesize

    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2, include_zero=True, keep_ratio=1.0))
    db = workspace.connect()
    base = db["traces"].count
    columns = [c.name for c in db["traces"].columns if c.name not in ("id", "teacher")]
    copy = 0
    with db.atomic():
        while db["traces"].count < total:
            copy += 1
            db.execute(f"INSERT INTO traces ({', '.join(columns)}, teacher) SELECT {', '.join(columns)}, "
                       f"'copy-{copy}' FROM traces WHERE teacher = 'geometric' LIMIT ?",
                       [min(base, total - db["traces"].count)])
    return db["traces"].count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", default="build/ui_latency.json")
    args = parser.parse_args(argv)

    from ivt_core.bootstrap import ensure_default_data, ensure_toy_model, toy_model_path
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig
    from ivt_core.review import next_trace, queue_filters
    from ivt_core.traces import approve
    from ivt_core.workspace import Workspace
    from ui import explore, traces
    from ui.context import AppContext

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.open(tmp)
        ensure_default_data(workspace)
        ensure_toy_model(workspace)
        grounder = TransformersGrounder.load(toy_model_path(), device="cpu")
        started = time.perf_counter()
        run = evaluate(workspace, grounder, str(toy_model_path()),
                       EvalRequest("shapes", "test", LoopConfig(steps=2), limit=args.samples))
        print(f"toy-model run of {args.samples} samples, T=2: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ctx = AppContext(workspace)
        samples = [r["sample_id"] for r in explore.sample_rows(ctx.db(), run.run_id)]

        def slider(i):
            explore.show_step(ctx, run.run_id, samples[i % len(samples)], i % 3, True, True)

        results["explore: slider move (image + text + curve)"] = timed(slider, args.repeat)
        stored = fill_traces(workspace, run.run_id, args.traces)
        print(f"{stored:,} traces stored", file=sys.stderr)
        filters = queue_filters("pending")
        first = next_trace(ctx.db(), None, filters)
        results[f"traces ({stored:,}): first view"] = timed(
            lambda i: traces.show(ctx, next_trace(ctx.db(), None, filters)["id"], 1), args.repeat)
        results[f"traces ({stored:,}): next trace"] = timed(
            lambda i: next_trace(ctx.db(), first["id"] + i * 997, filters), args.repeat)
        results[f"traces ({stored:,}): counts per status"] = timed(
            lambda i: traces.counts_text(ctx, filters), args.repeat)
        search = queue_filters("pending", search="small circle")
        results[f"traces ({stored:,}): full-text search, first match"] = timed(
            lambda i: next_trace(ctx.db(), None, search), args.repeat)

        def approve_and_advance(i):
            current = next_trace(ctx.db(), None, filters)
            approve(ctx.db(), current["id"], current["version"], "bench")
            nxt = next_trace(ctx.db(), current["id"], filters)
            traces.show(ctx, nxt["id"], 1)

        results[f"traces ({stored:,}): approve + advance + show"] = timed(approve_and_advance, args.repeat)
    width = max(len(k) for k in results)
    print(f"{'measure':<{width}}  median ms  p95 ms")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_ms']:9.1f}  {r['p95_ms']:6.1f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
