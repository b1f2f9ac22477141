"""Where a GRPO step's time goes: a few steps of the real trainer under cProfile; the trainer's own timings
(rollout, preparation of the training tensors, policy update) per step, the first step (warm-up) left out.

    python benchmarks/grpo_profile.py --workspace W --base assets/toy-model-sft --steps 3 --prompts 16 \\
        --group-size 8 --max-new-tokens 48 --json build/grpo_profile.json

Prints a table (seconds per step by part, and the top functions by own time) and writes JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--base", default="assets/toy-model-sft")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from ivt_core.config.training import GRPOConfig
    from training.grpo import train

    out = Path(args.workspace) / "models" / f"grpo-profile-{int(time.time())}"
    cfg = GRPOConfig(workspace=args.workspace, base=args.base, out=str(out), prompts=args.prompts,
                     group_size=args.group_size, max_new_tokens=args.max_new_tokens, max_steps=args.steps,
                     micro_batch=args.micro_batch, save_steps=1000)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(train, cfg)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = records[1:] or records
    parts = ("rollout_s", "prepare_s", "update_s")
    per_step = {k: sum(r[k] for r in steady) / len(steady) for k in parts}
    per_step["step_s"] = sum(per_step.values())
    steps = len(records)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
    print(f"{'part':<12}{'s/step':>10}")
    for name, value in per_step.items():
        print(f"{name:<12}{value:>10.3f}")
    print(f"{'wall':<12}{wall:>10.1f}  (all {steps} steps and the model load)")
    print(text.getvalue())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "per_step": per_step, "wall_s": wall,
                                               "steps": steps, "records": records}, indent=1))


if __name__ == "__main__":
    main()
