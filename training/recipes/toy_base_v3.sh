#!/usr/bin/env bash
# A base toy that binds the colour word (issue 15; docs/LOG.md, session 21; shipped as assets/toy-model since
# session 24), from the first toy (build/toy-base-v1: `first_toy` in stage.sh) in two stages of continued
# pretraining, then what it can do:
#   1. training/recipes/toy_colour_focus.json -> build/toy-colour-focus: 3,000 x 256 scenes where only colour tells
#      the objects apart (every shape has a twin of another colour, attribute questions only), 30 % naming;
#   2. training/recipes/toy_base_v3.json -> OUT: 2,000 x 256 of a shapes-v1-like world with more colour twins,
#      all three kinds of question, half multi-turn, half in other wordings, 30 % naming.
# Then benchmarks/attribute_probe.py (is the colour word bound?) and benchmarks/naming_check.py (can it read what
# its own box is on?) on the shapes-v1 test split.
#
#   bash training/recipes/toy_base_v3.sh [OUT]      # on a GPU: 10-15 minutes on one H200 (240-450 s + 340 s)
#
# Longer than one 600 s device call: run it again in the next call (while the machine is warm) and it goes on
# where it stopped: a finished stage is not trained again, a stopped one resumes from its last/. TIME_LIMIT=S stops
# (and saves) a stage after S seconds of its training (training/recipes/stage.sh).
set -euo pipefail
out=${1:-build/toy-base-v3}
device=${DEVICE:-cuda}
source "$(dirname "$0")/stage.sh"
first_toy build/toy-base-v1
stage training/recipes/toy_colour_focus.json build/toy-colour-focus
stage training/recipes/toy_base_v3.json "$out"
ws="$out/workspace"
"$py" -m ivt_core.cli data shapes --workspace "$ws" --split test --n 500 --seed 0
"$py" benchmarks/attribute_probe.py --workspace "$ws" --model "$out" --device "$device" --out "$out/attribute_probe.json"
"$py" benchmarks/naming_check.py --workspace "$ws" --model "$out" --device "$device" --out "$out/naming_check.json"
