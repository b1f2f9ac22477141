"""Where a GRPO step's time goes, function by function: a few steps of the real trainer under cProfile
(``train_throughput.bench_grpo_trainer``), the trainer's own timings per part, the first step (warm-up) left out.

    python benchmarks/grpo_profile.py --workspace W --base assets/toy-model-sft --steps 3 --prompts 16 \\
        --group-size 8 --json build/grpo_profile.json

Prints a table (seconds per step by part, and the top functions by own time) and writes JSON. With
``--torch-profiler`` the steps run under torch's profiler instead: the operators by device time (what the GPU
does in a step, where cProfile only sees the CPU wait for it).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import bench_grpo_trainer, print_parts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=None, help="with a shapes train split (default: a new one)")
    parser.add_argument("--base", default="assets/toy-model-sft")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the trainer's")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: the trainer's")
    parser.add_argument("--json", default=None)
    parser.add_argument("--torch-profiler", action="store_true", help="operators by device time, not cProfile")
    args = parser.parse_args()

    profile = cProfile.Profile()
    settings = {"micro_batch": args.micro_batch} if args.micro_batch else {}
    text = io.StringIO()
    if args.torch_profiler:
        import torch
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"

        def run(f, cfg):
            with torch_profile(activities=activities) as traced:
                f(cfg)
            text.write(traced.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=60))
    else:
        def run(f, cfg):
            profile.runcall(f, cfg)
            stats = pstats.Stats(profile, stream=text)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats("ivt_core|training", 40)  # this repository's functions
    start = time.perf_counter()
    row = bench_grpo_trainer(Path(args.base), args.prompts, args.group_size, args.steps, args.max_new_tokens,
                             Path(args.workspace) if args.workspace else None, run=run, **settings)
    wall = time.perf_counter() - start
    print_parts(row)
    print(f"{'wall':<34}{wall:>9.1f}   (all {row['steps']} steps and the model load)")
    print(text.getvalue())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "per_step": {**row["parts"],
                                                                                "step_s": row["s_per_step"]},
                                               "wall_s": wall, "steps": row["steps"], "records": row["records"]},
                                              indent=1))


if __name__ == "__main__":
    main()
