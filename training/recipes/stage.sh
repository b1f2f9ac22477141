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

# `first_toy DIR`: the first toy (single-shot grounding from scratch, training/recipes/toy_base_v1.json), the start
# of every later base. Shipped as assets/toy-model until 2026-12-03, so it is taken from the repository's history
# when there is one (instant); else trained (24 minutes on one H200; TIME_LIMIT and running again, as any stage).
FIRST_TOY_COMMIT=5564b5d27d2f5ae47d691afd4ebbdc54fcc5c3c5
first_toy() {
  local dir=$1 here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  [ -f "$dir/config.json" ] && return 0
  mkdir -p "$dir"
  if git -C "$here" archive "$FIRST_TOY_COMMIT" assets/toy-model 2>/dev/null | tar -x --strip-components=2 -C "$dir"; then
    return 0
  fi
  stage "$here/training/recipes/toy_base_v1.json" "$dir" "${@:2}"
}
