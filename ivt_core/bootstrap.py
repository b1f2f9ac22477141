"""The embedded default: shapes-world splits and the shipped toy models, put into a fresh workspace.

Three models ship in ``assets/``: ``toy-model`` (the base: grounding, multi-turn conversations and naming, no
refinement), ``toy-model-sft`` (the same after SFT on name-first verdicts of its own answers) and
``toy-model-grpo`` (a GRPO adapter on the SFT toy), so that a fresh workspace can compare a base model with
fine-tuned ones, as users do with real checkpoints; each has a model card in its folder. What a fresh workspace
runs on first start is the app's policy, in ``ivt_core.first_start``.
"""

from __future__ import annotations

from pathlib import Path

from ivt_core.data.shapes_split import write_shapes_split
from ivt_core.errors import NotFoundError
from ivt_core.store.models import register_model
from ivt_core.store.samples import get_dataset, list_datasets
from ivt_core.workspace import Workspace

DEFAULT_SPLITS = {"train": 1000, "val": 200, "test": 500}  # train: traces and GRPO prompts; val, test: numbers
TOY_MODEL_PATH = Path(__file__).resolve().parent.parent / "assets" / "toy-model"
TOY_SFT_PATH = TOY_MODEL_PATH.parent / "toy-model-sft"
TOY_GRPO_PATH = TOY_MODEL_PATH.parent / "toy-model-grpo"  # a LoRA adapter on the SFT toy


def toy_model_path() -> Path:
    """The shipped toy model's folder. Raises NotFoundError if the checkout lacks it."""
    if not (TOY_MODEL_PATH / "config.json").is_file():
        raise NotFoundError(f"the shipped toy model is missing from {TOY_MODEL_PATH}; pass --model PATH")
    return TOY_MODEL_PATH


def ensure_toy_model(workspace: Workspace) -> int:
    """Register the shipped toy model in the workspace (idempotent); return its model id."""
    db = workspace.connect()
    try:
        return register_model(db, "toy-model", str(toy_model_path()), "qwen3_vl", meta={"shipped": True})
    finally:
        db.close()


def ensure_shipped_models(workspace: Workspace) -> dict[str, int]:
    """Register the toy model and, where the checkout has them, its corrective-SFT version (child of the toy
    model) and the GRPO adapter trained from that (child of the SFT toy, registered as ``training.grpo``
    registers its models); return {name: model id}. Idempotent."""
    models = {"toy-model": ensure_toy_model(workspace)}
    if not (TOY_SFT_PATH / "config.json").is_file():
        return models
    db = workspace.connect()
    try:
        models["toy-model-sft"] = register_model(db, "toy-model-sft", str(TOY_SFT_PATH), "qwen3_vl",
                                                 parent_id=models["toy-model"], meta={"shipped": True})
        if (TOY_GRPO_PATH / "adapter_config.json").is_file():
            models["toy-model-grpo"] = register_model(
                db, "toy-model-grpo", str(TOY_SFT_PATH), "qwen3_vl", adapter_path=str(TOY_GRPO_PATH),
                parent_id=models["toy-model-sft"],
                meta={"shipped": True, "kind": "grpo", "adapters": [str(TOY_GRPO_PATH)]})
    finally:
        db.close()
    return models


def ensure_default_data(workspace: Workspace, seed: int = 0) -> dict[str, int]:
    """Generate the default shapes splits the workspace lacks entirely; return {split: samples written now}.

    A split that exists is left as it is, whatever its size: the user may have made it small on purpose. A
    ``shapes`` dataset of another seed or world (the user's own) is left alone entirely.
    """
    from dataclasses import asdict

    from ivt_core.data.shapes import ShapesConfig
    from ivt_core.data.shapes_split import json_roundtrip

    db = workspace.connect()
    try:
        existing = get_dataset(db, "shapes")
        have = next((d["splits"] for d in list_datasets(db) if d["name"] == "shapes"), {})
    finally:
        db.close()
    if existing and (existing["kind"] != "shapes" or existing["meta"] != json_roundtrip(
            {"seed": seed, "world": asdict(ShapesConfig())})):
        return {}
    written = {}
    for split, n in DEFAULT_SPLITS.items():
        if not have.get(split):
            written[split] = write_shapes_split(workspace, split, n, seed)
    return written
