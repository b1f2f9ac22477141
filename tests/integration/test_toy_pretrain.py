"""The toy pretraining script on CPU at a tiny size: trains, saves its config, resumes, loads as a grounder."""

import json

from training.toy_pretrain import main

TINY = ["--batch-size", "4", "--workers", "0", "--eval-every", "3", "--eval-samples", "4", "--hidden", "32",
        "--heads", "2", "--kv-heads", "1", "--intermediate", "64", "--vision-hidden", "64", "--vision-depth", "1",
        "--layers", "1", "--warmup", "2", "--save-every", "3"]


def test_trains_saves_and_resumes(tmp_path):
    out = tmp_path / "toy"
    main(["--out", str(out), "--steps", "3", *TINY])
    config = json.loads((out / "train_config.json").read_text())
    assert config["steps"] == 3 and config["hidden"] == 32
    history = json.loads((out / "train_metrics.json").read_text())["history"]
    assert any("val_acc@0.5" in h for h in history)

    main(["--out", str(out), "--steps", "5", "--resume", *TINY])
    history = json.loads((out / "train_metrics.json").read_text())["history"]
    assert [h["step"] for h in history if "val_format_ok" in h] == [3, 5]

    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    grounder = TransformersGrounder.load(out, device="cpu")
    assert grounder.family.name == "qwen3_vl"
