#!/usr/bin/env bash
# GRPO from the shipped SFT toy with the trainer's defaults (16 prompts x G=8, T=2), then both models on the
# shapes test split (500 scenes, T=2). On a GPU:  bash benchmarks/grpo_from_sft_toy.sh WORKSPACE OUT SECONDS
# Writes OUT/metrics.jsonl (the reward / KL curve), OUT/eval_sft.json, OUT/eval_grpo.json, OUT/profile.json.
set -euo pipefail
ws=${1:-/tmp/grpo-ws}; out=${2:-build/grpo-from-sft-toy}; budget=${3:-300}
mkdir -p "$out"
python -m ivt_core.cli data shapes --workspace "$ws" --split train --n 1000 --seed 0 2>&1 | tail -1
python benchmarks/grpo_profile.py --workspace "$ws" --steps 4 --prompts 16 --group-size 8 --json "$out/profile.json" \
    2>&1 | grep -A5 "^part"
per_step=$(python -c "import json; print(json.load(open('$out/profile.json'))['per_step']['step_s'])")
steps=$(python -c "print(max(10, int($budget / ($per_step * 1.1))))")
echo "GRPO: $steps steps at ~${per_step}s each"
python -m training.grpo --workspace "$ws" --base assets/toy-model-sft --prompts 16 --group-size 8 \
    --max-steps "$steps" --save-steps 1000 --out "$ws/models/grpo-sft-toy" 2>&1 | grep -v "^{\"step\"" | tail -3
cp "$ws/models/grpo-sft-toy/metrics.jsonl" "$out/metrics.jsonl"
python -m ivt_core.cli eval --workspace "$ws" --model assets/toy-model-sft --dataset shapes --split test --steps 2 \
    --json > "$out/eval_sft.json"
python -m ivt_core.cli eval --workspace "$ws" --model assets/toy-model-sft --adapter "$ws/models/grpo-sft-toy/adapter" \
    --dataset shapes --split test --steps 2 --json > "$out/eval_grpo.json"
python -m ivt_core.cli compare 1 2 --workspace "$ws" 2>&1 | tail -20
