"""The script that rebuilds the three shipped toys chains end to end (a few steps of each stage, on the CPU)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_toys_script_runs_every_step_on_a_cpu(tmp_path):
    out = tmp_path / "toys"
    done = subprocess.run(["bash", str(ROOT / "training/recipes/shipped_toys.sh"), str(out)], cwd=tmp_path,
                          env={**os.environ, "SMOKE": "1", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "toy-model" / "config.json").is_file()
    assert {"config.json", "preprocessor_config.json", "tokenizer.json"} <= {
        p.name for p in (out / "toy-model-sft").iterdir()}
    assert (out / "toy-model-grpo" / "adapter_model.safetensors").is_file()
    table = (out / "paper_table.txt").read_text()
    for row in ("toy-model single shot", "toy-model + IVT", "toy-model-sft + IVT",
                "toy-model-sft + IVT, derived verdict", "toy-model-grpo + IVT",
                "toy-model-grpo + IVT, derived verdict"):
        assert f"\n{row} " in table, row
