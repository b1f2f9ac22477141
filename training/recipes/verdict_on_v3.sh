#!/usr/bin/env bash
# A verdict recipe on the colour-binding base v3 (issue 15, item 3), then what docs/LOG.md reports for each one, on
# shapes-v2 test (500 scenes, seed 0, greedy): v3's single shot (run 1), the trained model's T=2 loop (run 2) and
# the same loop with the verdict derived from its own name (run 3, `ivt eval --verdict derived`), its verifier
# AUROC on v3's step-0 boxes after its own reasoning, the paper's table with the per-step account of the answers
# each loop changed, whether its verdict reads its own name (benchmarks/verdict_reads_name.py) and its first
# refinement with the verdict worked out from that name (benchmarks/derived_verdict.py).
#
#   bash training/recipes/verdict_on_v3.sh training/recipes/toy_checkable_verdicts_v3.json build/s24a
#
# Re-makes build/toy-base-v3 first when it is missing (toy_base_v3.sh). On one H200: ~15 minutes for v3, then
# ~25 s of mining the base's own answers, ~6 minutes of training and ~2 of measurements. Longer than one 600 s
# device call: run it again in the next call (while the machine is warm) and it goes on where it stopped
# (TIME_LIMIT=S as in training/recipes/stage.sh). The evaluation workspace is OUT/workspace, made afresh.
set -euo pipefail
recipe=$1
out=$2
device=${DEVICE:-cuda}
here=$(dirname "$0")
source "$here/stage.sh"
if [ ! -f build/toy-base-v3/config.json ]; then
  bash "$here/toy_base_v3.sh" build/toy-base-v3
  [ -f build/toy-base-v3/config.json ] || exit 0
fi
stage "$recipe" "$out"
ws="$out/workspace"
rm -rf "$ws"
ivt() { "$py" -m ivt_core.cli "$@"; }
ivt data shapes --workspace "$ws" --split test --n 500 --seed 0 --world shapes-v2 --name shapes2
ivt eval --workspace "$ws" --model build/toy-base-v3 --dataset shapes2 --split test --steps 0 --device "$device"
ivt eval --workspace "$ws" --model "$out" --dataset shapes2 --split test --steps 2 --device "$device"
ivt eval --workspace "$ws" --model "$out" --dataset shapes2 --split test --steps 2 --verdict derived --device "$device"
ivt verifier 1 --workspace "$ws" --model "$out" --reasoning-first --device "$device"
ivt paper-table 1 2 3 --workspace "$ws"
"$py" benchmarks/verdict_reads_name.py --workspace "$ws" --model "$out" --dataset shapes2 --device "$device" \
  --out "$out/verdict_reads_name.json"
"$py" benchmarks/derived_verdict.py --workspace "$ws" --model "$out" --run 2 --base-run 1 --device "$device" \
  --out "$out/derived_verdict.json"
