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
#   bash training/recipes/toy_base_v3.sh [OUT]      # on a GPU: ~10 minutes on one H200 (246 s + 340 s of training)
set -euo pipefail
out=${1:-build/toy-base-v3}
py=${PYTHON:-python}
device=${DEVICE:-cuda}
"$py" -m training.toy_pretrain --config training/recipes/toy_colour_focus.json --out build/toy-colour-focus
"$py" -m training.toy_pretrain --config training/recipes/toy_base_v3.json --out "$out"
ws="$out/workspace"
"$py" -m ivt_core.cli data shapes --workspace "$ws" --split test --n 500 --seed 0
"$py" benchmarks/attribute_probe.py --workspace "$ws" --model "$out" --device "$device" --out "$out/attribute_probe.json"
"$py" benchmarks/naming_check.py --workspace "$ws" --model "$out" --device "$device" --out "$out/naming_check.json"
