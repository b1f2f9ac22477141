#!/usr/bin/env bash
# The three shipped toy models, each from the one before, then the paper's table on shapes-v2 test (issue 15):
#   1. the base toy (assets/toy-model): the first toy (single-shot grounding from scratch; `first_toy` in
#      stage.sh: from the repository's history, or trained), then three stages of continued pretraining that bind
#      the colour word, bring multi-turn conversations and naming (toy_colour_focus.json, toy_base_v3.json), and
#      the loop's refinement sentence asked about other objects over arbitrary boxes, so that the prompt is
#      familiar but nothing about checking a box is learned (toy_base_v3_refine_wording.json);
#   2. the SFT toy (assets/toy-model-sft): toy_own_verdicts_v3.json from it: name-first verdict turns ("It is on
#      the small red square. Wrong colour." and the box) on the base's own mined errors and right answers,
#      counterfactual boxes and the loop's second refinement turn;
#   3. the GRPO toy (assets/toy-model-grpo, a LoRA adapter on the SFT toy): 300 GRPO steps on refinement turns
#      with the improvement reward (16 prompts x 8 rollouts, T=2, a 2,000-scene shapes-v2 train split).
# Then the base (T=2: its step 0 is the single shot, the run the naive-IVT row), the SFT and GRPO toys, each with
# its own verdict and with the verdict derived from its name (`--verdict derived`), on shapes-v2 test (500, T=2,
# greedy), and `ivt paper-table`.
#
#   bash training/recipes/shipped_toys.sh OUT            # on a GPU: ~35 minutes on one H200 (colour focus ~4-8,
#                                                        # v3 ~8, refine wording ~3, SFT ~6, GRPO ~6,
#                                                        # evaluations ~2)
#   SMOKE=1 bash training/recipes/shipped_toys.sh OUT    # a few steps of each on a CPU: the commands chain
#                                                        # (the SFT stage then starts from assets/toy-model)
#
# Longer than one 600 s device call: TIME_LIMIT=S stops a training stage after S seconds (and saves it); run the
# script again and it goes on where it stopped (stage.sh; GRPO from its last checkpoint, saved when it is stopped).
# Writes OUT/toy-model, OUT/toy-model-sft, OUT/toy-model-grpo (as shipped), OUT/eval_*.json and
# OUT/paper_table.txt. GPU training is not bit-reproducible: expect numbers of the model cards' shape, not bits.
set -euo pipefail
out=${1:?usage: [SMOKE=1] [TIME_LIMIT=S] bash training/recipes/shipped_toys.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
source training/recipes/stage.sh
ivt() { "$py" -m ivt_core.cli "$@"; }

if [[ ${SMOKE:-0} == 1 ]]; then
    small=(--steps 3 --batch-size 4 --warmup 1 --eval-every 100 --eval-samples 4 --save-every 100 --workers 0
           --no-bf16)
    mine=(--own-error-scenes 24)
    grpo=(--max-steps 1 --prompts 2 --group-size 2 --max-new-tokens 16)
    n_grpo=16 n_test=8
    sft_from="$here/assets/toy-model"  # a 3-step toy answers nothing readable: no own answers to mine
else
    small=() mine=()
    grpo=(--max-steps 300 --prompts 16 --group-size 8)
    n_grpo=2000 n_test=500
    sft_from="$out/toy-model"
fi

echo "== 1. the base toy"
first_toy "$out/toy-base-v1" "${small[@]}"
stage training/recipes/toy_colour_focus.json "$out/toy-colour-focus" --init-from "$out/toy-base-v1" "${small[@]}"
stage training/recipes/toy_base_v3.json "$out/toy-base-v3" --init-from "$out/toy-colour-focus" "${small[@]}"
stage training/recipes/toy_base_v3_refine_wording.json "$out/toy-model" --init-from "$out/toy-base-v3" "${small[@]}"

echo "== 2. the SFT toy"
stage training/recipes/toy_own_verdicts_v3.json "$out/toy-model-sft" --init-from "$sft_from" "${small[@]}" "${mine[@]}"

echo "== 3. the GRPO toy"
if [ ! -f "$out/toy-model-grpo/adapter_model.safetensors" ]; then
    grpo_ws="$out/grpo-workspace"
    if [ ! -f "$grpo_ws/models/toy-model-grpo/checkpoint/state.pt" ]; then  # else: go on from its checkpoint
        rm -rf "$grpo_ws"
        ivt data shapes --workspace "$grpo_ws" --split train --n "$n_grpo" --seed 0 --world shapes-v2 --name shapes2
    fi
    # TIME_LIMIT: SIGTERM after S seconds; training.grpo saves a checkpoint at the end of its step and stops
    grpo_limit=(); [ -n "${TIME_LIMIT:-}" ] && grpo_limit=(timeout -s TERM "$TIME_LIMIT")
    rc=0
    "${grpo_limit[@]}" "$py" -m training.grpo --workspace "$grpo_ws" --base "$out/toy-model-sft" --dataset shapes2 \
        --split train --steps 2 --train-turns refinement --reward improvement "${grpo[@]}" \
        --out "$grpo_ws/models/toy-model-grpo" || rc=$?
    if [ ! -f "$grpo_ws/models/toy-model-grpo/adapter/adapter_model.safetensors" ]; then
        [ "$rc" = 124 ] && { echo "GRPO stopped at the time limit; run this script again to go on"; exit 0; }
        exit "$rc"
    fi
    mkdir -p "$out/toy-model-grpo"
    cp "$grpo_ws/models/toy-model-grpo/adapter/adapter_config.json" \
       "$grpo_ws/models/toy-model-grpo/adapter/adapter_model.safetensors" \
       "$grpo_ws/models/toy-model-grpo/grpo_config.json" "$grpo_ws/models/toy-model-grpo/metrics.jsonl" \
       "$out/toy-model-grpo/"
fi

echo "== 4. on shapes-v2 test, T=2, and the paper's table"
ws="$out/workspace"
rm -rf "$ws"
ivt data shapes --workspace "$ws" --split test --n "$n_test" --seed 0 --world shapes-v2 --name shapes2
runs=()
for name in base sft sft_derived grpo grpo_derived; do
    case $name in
        base) model=(--model "$out/toy-model") ;;
        sft*) model=(--model "$out/toy-model-sft") ;;
        grpo*) model=(--model "$out/toy-model-sft" --adapter "$out/toy-model-grpo") ;;
    esac
    verdict=(); [[ $name == *_derived ]] && verdict=(--verdict derived)
    ivt eval --workspace "$ws" "${model[@]}" "${verdict[@]}" --dataset shapes2 --split test --steps 2 --json \
        > "$out/eval_$name.json"
    runs+=("$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['run_id'])" "$out/eval_$name.json")")
done
ivt paper-table "${runs[@]}" --workspace "$ws" --labels "toy-model,toy-model-sft,toy-model-sft,toy-model-grpo,toy-model-grpo" \
    | tee "$out/paper_table.txt"
