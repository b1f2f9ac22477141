#!/usr/bin/env bash
# The three shipped toy models from nothing, each from the one before, then the paper's table on the test split:
#   1. the base toy (assets/toy-model): training.toy_pretrain with its recorded config;
#   2. the SFT toy (assets/toy-model-sft): the base's own step-0 mistakes on 1,200 train scenes, turned into
#      minimal corrective and keep traces, all approved, full fine-tuning (as its model card says);
#   3. the GRPO toy (assets/toy-model-grpo): 163 GRPO steps of the trainer's defaults from the SFT toy.
# Then all three on the 500-scene test split at T=2 and `ivt paper-table`.
#
#   bash training/recipes/shipped_toys.sh OUT            # on a GPU (the base toy is most of the time)
#   SMOKE=1 bash training/recipes/shipped_toys.sh OUT    # a few steps of each on a CPU: the commands chain
#                                                          (SFT then starts from assets/toy-model)
#
# Writes OUT/toy-model, OUT/toy-model-sft (bf16, as shipped), OUT/toy-model-grpo (the adapter), OUT/eval_*.json
# and OUT/paper_table.txt. Training samples answers, so expect curves and numbers of the same shape as the model
# cards', not the same bits.
set -euo pipefail
out=${1:?usage: [SMOKE=1] bash training/recipes/shipped_toys.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
py=${PYTHON:-python}
ivt() { "$py" -m ivt_core.cli "$@"; }

if [[ ${SMOKE:-0} == 1 ]]; then
    toy=(--steps 3 --batch-size 4 --warmup 1 --eval-every 100 --eval-samples 4 --save-every 100 --workers 0 --no-bf16)
    sft=(--max-steps 2)
    grpo=(--max-steps 1 --prompts 2 --group-size 2 --max-new-tokens 16)
    n_sft=24 n_grpo=16 n_test=8
    base="$here/assets/toy-model"  # a 3-step toy answers nothing readable, so the SFT step would get no traces
else
    toy=()
    sft=()
    grpo=(--max-steps 163)
    n_sft=1200 n_grpo=1000 n_test=500
    base="$out/toy-model"
fi
ws="$out/workspace"        # SFT's traces and the evaluations
grpo_ws="$out/grpo-workspace"  # GRPO's prompts (a 1,000-scene train split, as for the shipped adapter)

echo "== 1. the base toy"
"$py" -m training.toy_pretrain --config assets/toy-model/train_config.json "${toy[@]}" --out "$out/toy-model"

echo "== 2. the SFT toy"
ivt data shapes --workspace "$ws" --split train --n "$n_sft" --seed 0
ivt data shapes --workspace "$ws" --split test --n "$n_test" --seed 0
ivt eval --workspace "$ws" --model "$base" --dataset shapes --split train --steps 0 --json \
    > "$out/eval_base_train.json"
train_run=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['run_id'])" "$out/eval_base_train.json")
ivt synth --workspace "$ws" --run "$train_run" --steps 1 --style minimal --confirm --include-zero --keep-ratio 1.0
ivt traces approve --all-matching --workspace "$ws"
# trained before the SFT trainer froze the vision tower by default: --no-freeze-vision repeats that
"$py" -m training.sft --workspace "$ws" --base "$base" --full-finetune --no-freeze-vision --replay 0.5 \
    --lr 6e-4 --epochs 3 --batch-size 8 --eval-fraction 0.03 --seed 0 "${sft[@]}" --out "$ws/models/sft"
"$py" - "$ws/models/sft/model" "$out/toy-model-sft" <<'PY'
import sys

import torch
from transformers import AutoModelForImageTextToText

trained, target = sys.argv[1:]
AutoModelForImageTextToText.from_pretrained(trained, dtype=torch.bfloat16).save_pretrained(target)
PY
for file in chat_template.jinja preprocessor_config.json processor_config.json tokenizer.json tokenizer_config.json; do
    cp "$base/$file" "$out/toy-model-sft/"  # the base's tokenizer and image processor, as shipped
done

echo "== 3. the GRPO toy"
ivt data shapes --workspace "$grpo_ws" --split train --n "$n_grpo" --seed 0
"$py" -m training.grpo --workspace "$grpo_ws" --base "$out/toy-model-sft" --prompts 16 --group-size 8 \
    "${grpo[@]}" --out "$grpo_ws/models/toy-model-grpo"
mkdir -p "$out/toy-model-grpo"
cp "$grpo_ws/models/toy-model-grpo/adapter/adapter_config.json" \
   "$grpo_ws/models/toy-model-grpo/adapter/adapter_model.safetensors" \
   "$grpo_ws/models/toy-model-grpo/grpo_config.json" "$out/toy-model-grpo/"

echo "== 4. the three on the test split, T=2, and the paper's table"
runs=()
for name in base sft grpo; do
    case $name in
        base) model=(--model "$base") ;;
        sft) model=(--model "$out/toy-model-sft") ;;
        grpo) model=(--model "$out/toy-model-sft" --adapter "$out/toy-model-grpo") ;;
    esac
    ivt eval --workspace "$ws" "${model[@]}" --dataset shapes --split test --steps 2 --json > "$out/eval_$name.json"
    runs+=("$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['run_id'])" "$out/eval_$name.json")")
done
ivt paper-table "${runs[@]}" --workspace "$ws" | tee "$out/paper_table.txt"
