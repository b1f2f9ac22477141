#!/usr/bin/env bash
# A base toy that binds the colour word (issue 15; docs/LOG.md, session 21), from the shipped base toy in two
# stages of continued pretraining, then what it can do:
#   1. training/recipes/toy_colour_focus.json -> build/toy-colour-focus: 3,000 x 256 scenes where only colour tells
#      the objects apart (every shape has a twin of another colour, attribute questions only), 30 % naming;
#   2. training/recipes/toy_base_v3.json -> OUT: 2,000 x 256 of a shapes-v1-like world with more colour twins,
#      all three kinds of question, half multi-turn, half in other wordings, 30 % naming.
# Then benchmarks/attribute_probe.py (is the colour word bound?) and benchmarks/naming_check.py (can it read what
# its own box is on?) on the shapes-v1 test split.
#
#   bash training/recipes/toy_base_v3.sh [OUT]      # on a GPU: 10-15 minutes on one H200 (246-455 s + 340 s)
#
# Longer than one 600 s device call: run it again in the next call (while the machine is warm) and it goes on
# where it stopped: a finished stage 1 is not trained again, stage 2 resumes from OUT/last/. TIME_LIMIT=S stops
# (and saves) stage 2 after S seconds of its training.
set -euo pipefail
out=${1:-build/toy-base-v3}
py=${PYTHON:-python}
device=${DEVICE:-cuda}
limit=(); [ -n "${TIME_LIMIT:-}" ] && limit=(--time-limit-s "$TIME_LIMIT")
stage() {  # CONFIG OUT [flags]: train unless finished; resume a stage that stopped at a time limit
  local config=$1 dir=$2; shift 2
  [ -f "$dir/config.json" ] && return 0
  local resume=(); [ -f "$dir/last/trainer_state.pt" ] && resume=(--resume)
  "$py" -m training.toy_pretrain --config "$config" --out "$dir" "${resume[@]}" "$@"
  [ -f "$dir/config.json" ] || { echo "stopped at the time limit; run this script again to go on"; exit 0; }
}
stage training/recipes/toy_colour_focus.json build/toy-colour-focus
stage training/recipes/toy_base_v3.json "$out" "${limit[@]}"
ws="$out/workspace"
"$py" -m ivt_core.cli data shapes --workspace "$ws" --split test --n 500 --seed 0
"$py" benchmarks/attribute_probe.py --workspace "$ws" --model "$out" --device "$device" --out "$out/attribute_probe.json"
"$py" benchmarks/naming_check.py --workspace "$ws" --model "$out" --device "$device" --out "$out/naming_check.json"
