# Sourced by the recipe scripts: `stage CONFIG OUT [flags]` trains a toy (training/toy_pretrain.py) unless OUT
# holds a finished one; a run that stopped at its time limit (OUT/last/) is resumed. When it stops at the limit
# again, the script exits 0 saying so: run it again (on a warm device machine) to go on. TIME_LIMIT=S in the
# environment stops (and saves) after S seconds of training; PYTHON picks the interpreter.
py=${PYTHON:-python}
limit=(); [ -n "${TIME_LIMIT:-}" ] && limit=(--time-limit-s "$TIME_LIMIT")
stage() {
  local config=$1 dir=$2; shift 2
  [ -f "$dir/config.json" ] && return 0
  local resume=(); [ -f "$dir/last/trainer_state.pt" ] && resume=(--resume)
  "$py" -m training.toy_pretrain --config "$config" --out "$dir" "${resume[@]}" "${limit[@]}" "$@"
  [ -f "$dir/config.json" ] || { echo "$dir stopped at the time limit; run this script again to go on"; exit 0; }
}
