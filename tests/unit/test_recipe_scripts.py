"""The GPU recipe scripts go on where they stopped (training/recipes/stage.sh): run again after a time limit,
a finished stage is skipped and a stopped one resumed. Checked with a stand-in for Python that records each
command and "trains" by writing what toy_pretrain would (last/ at the time limit, config.json when done)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
[ "$2" = training.toy_pretrain ] || exit 0
out=$(echo "$*" | sed 's/.*--out \([^ ]*\).*/\1/')
if [[ "$*" == *--time-limit-s* ]] && [[ "$*" != *--resume* ]]; then
  mkdir -p "$out/last" && touch "$out/last/trainer_state.pt"
else
  mkdir -p "$out" && touch "$out/config.json"
fi
"""


def _run(tmp_path: Path, calls: Path, *args: str) -> list[str]:
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    before = calls.read_text().splitlines() if calls.exists() else []
    done = subprocess.run(["bash", str(ROOT / "training/recipes/verdict_on_v3.sh"), *args], cwd=tmp_path,
                          env={**os.environ, "PYTHON": str(fake), "CALLS": str(calls), "TIME_LIMIT": "300"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()[len(before):]


def test_a_time_limited_recipe_goes_on_where_it_stopped_when_run_again(tmp_path):
    calls = tmp_path / "calls.txt"
    recipe, out = "training/recipes/toy_checkable_verdicts_v3.json", "build/s"
    first = _run(tmp_path, calls, recipe, out)  # stage 1 of v3 stops at the limit
    assert len(first) == 1 and "toy_colour_focus.json" in first[0] and "--resume" not in first[0]
    second = _run(tmp_path, calls, recipe, out)  # stage 1 resumed and done; stage 2 stops
    assert len(second) == 2 and "--resume" in second[0] and "toy_base_v3.json" in second[1]
    third = _run(tmp_path, calls, recipe, out)  # v3 done and measured; the verdict recipe stops
    assert "toy_base_v3.json" in third[0] and "--resume" in third[0]
    assert any("naming_check.py" in c for c in third) and "toy_checkable_verdicts_v3.json" in third[-1]
    fourth = _run(tmp_path, calls, recipe, out)  # resumed, done, then the measurements on a fresh workspace
    assert "--resume" in fourth[0] and not any("toy_colour_focus" in c or "toy_base_v3.json" in c for c in fourth)
    assert any("eval" in c and "--steps 2" in c for c in fourth) and "verdict_reads_name.py" in fourth[-2]
    assert any("--verdict derived" in c for c in fourth) and any("paper-table 1 2 3" in c for c in fourth)
    assert "derived_verdict.py" in fourth[-1] and "--run 2 --base-run 1" in fourth[-1]
    assert _run(tmp_path, calls, recipe, out)[0].startswith("-m ivt_core.cli data shapes")  # nothing trained again


FAKE_GRPO_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  -c*) echo 1 ;;
  "-m training.grpo"*)
    out=$(echo "$*" | sed 's/.*--out \([^ ]*\).*/\1/')
    if [ -f "$out/checkpoint/state.pt" ]; then  # resumed: finishes
      mkdir -p "$out/adapter" && touch "$out/adapter/adapter_config.json" "$out/adapter/adapter_model.safetensors" \
        "$out/grpo_config.json" "$out/metrics.jsonl"
    else  # the first call: a checkpoint, then past the time limit
      mkdir -p "$out/checkpoint" && touch "$out/checkpoint/state.pt" && sleep 30
    fi ;;
  *"ivt_core.cli eval"*) echo '{"run_id": 1}' ;;
esac
exit 0
"""


def test_the_shipped_toys_grpo_stage_goes_on_from_its_checkpoint_after_a_time_limit(tmp_path):
    """GRPO stopped by TIME_LIMIT keeps its workspace and checkpoint; run again, the script goes on from it instead
    of making the workspace anew (which deleted the checkpoint)."""
    fake, calls, out = tmp_path / "fakepython", tmp_path / "calls.txt", tmp_path / "toys"
    fake.write_text(FAKE_GRPO_PYTHON)
    fake.chmod(0o755)
    # the stages before, finished
    for done in ("toy-base-v1", "toy-colour-focus", "toy-base-v3", "toy-model", "toy-model-sft"):
        (out / done).mkdir(parents=True)
        (out / done / "config.json").write_text("{}")

    def run() -> tuple[subprocess.CompletedProcess, list[str]]:
        before = calls.read_text().splitlines() if calls.exists() else []
        done = subprocess.run(["bash", str(ROOT / "training/recipes/shipped_toys.sh"), str(out)], cwd=tmp_path,
                              env={**os.environ, "PYTHON": str(fake), "CALLS": str(calls), "TIME_LIMIT": "1"},
                              capture_output=True, text=True, timeout=60)
        return done, calls.read_text().splitlines()[len(before):]

    first, first_calls = run()
    assert first.returncode == 0 and "GRPO stopped at the time limit" in first.stdout, first.stderr
    assert any("data shapes" in c for c in first_calls) and not any("cli eval" in c for c in first_calls)
    second, second_calls = run()
    assert second.returncode == 0, second.stderr
    assert not any("data shapes" in c and "grpo-workspace" in c for c in second_calls)  # the checkpoint kept
    assert (out / "toy-model-grpo" / "adapter_model.safetensors").is_file()
    assert any("paper-table" in c for c in second_calls)
