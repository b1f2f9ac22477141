"""The browser's forms and the CLI cannot disagree: every form field generated from a config has the config's
default, and what a form submits is the config the CLI would build."""

import pytest

from ivt_core.config import job_config_class
from ivt_core.config.settings import default_of
from ivt_core.config.training import GRPOConfig, SFTConfig


@pytest.fixture(scope="module")
def app_blocks(tmp_path_factory):
    from ivt_core.bootstrap import ensure_shipped_models
    from ivt_core.workspace import Workspace
    from ui.app import create_app
    from ui.context import AppContext

    workspace = Workspace.open(tmp_path_factory.mktemp("ws"))
    ensure_shipped_models(workspace)
    return create_app(AppContext(workspace))


def _config_components(blocks):
    return {block.elem_id: block for block in blocks.blocks.values()
            if isinstance(getattr(block, "elem_id", None), str) and block.elem_id.startswith("cfg-")}


def test_every_form_default_equals_the_dataclass_default(app_blocks):
    found = _config_components(app_blocks)
    kinds = {elem.split("-")[1] for elem in found}
    assert kinds == {"eval", "synth", "sft", "grpo"}  # the Explore, Traces and Train forms
    for elem_id, component in found.items():
        _, kind, name = elem_id.split("-", 2)
        assert component.value == default_of(job_config_class(kind), name), elem_id


def test_form_limits_are_the_dataclass_limits(app_blocks):
    from dataclasses import fields

    from ui.config_form import limits_text

    for elem_id, component in _config_components(app_blocks).items():
        _, kind, name = elem_id.split("-", 2)
        meta = next(f.metadata for f in fields(job_config_class(kind)) if f.name == name)
        if meta["choices"] is not None:
            assert [c[1] for c in component.choices] == list(meta["choices"]), elem_id
        elif type(component).__name__ == "Slider":
            assert (component.minimum, component.maximum) == (meta["min"], meta["max"]), elem_id
        elif meta["min"] is not None or meta["max"] is not None:  # a number box says its range
            assert limits_text(meta["min"], meta["max"]) in component.info, elem_id


def test_a_new_form_field_shows_without_another_edit(monkeypatch):
    """Adding a knob is one field: a form field marked form=True appears in the generated form."""
    import dataclasses

    import gradio as gr

    from ivt_core.config.settings import setting
    from ui.config_form import config_fields, config_from_form

    @dataclasses.dataclass
    class Knobby(SFTConfig):
        warmup_ratio: float = setting(0.1, "share of steps spent warming up", min=0.0, max=1.0, form=True,
                                      label="Warmup ratio")

    with gr.Blocks():
        made = config_fields(Knobby)
    assert made["warmup_ratio"].value == 0.1 and made["warmup_ratio"].elem_id == "cfg-sft-warmup_ratio"
    config = config_from_form(Knobby, {"warmup_ratio": 0.2, "lr": 1e-4})
    assert config.warmup_ratio == 0.2 and config.lr == 1e-4


def test_an_emptied_form_field_says_which(monkeypatch):
    from ivt_core.errors import InvalidInputError
    from ui.config_form import config_from_form

    with pytest.raises(InvalidInputError, match=r"Learning rate \(0: by model size\) is empty"):
        config_from_form(GRPOConfig, {"lr": None})


def test_an_optional_number_left_empty_means_empty():
    """gradio's page shows and sends an empty number box as 0: for "At most N samples (0: all)" that is empty (all),
    not a refusal (Explore's evaluation form could not start an evaluation of all samples); a number typed stays."""
    from ivt_core.config.evaluation import EvalConfig
    from ui.config_form import config_from_form

    assert config_from_form(EvalConfig, {"limit": 0}, dataset="shapes", split="val").limit is None
    assert config_from_form(EvalConfig, {"limit": 40}, dataset="shapes", split="val").limit == 40
    assert config_from_form(EvalConfig, {"steps": 0}, dataset="shapes", split="val").steps == 0  # 0 is a value


@pytest.mark.parametrize("cls, values, message", [
    (SFTConfig, {"lr": float("nan")}, "lr must be a finite number"),
    (SFTConfig, {"lr": 1e20}, "lr must be between"),
    (SFTConfig, {"batch_size": 2.5}, "batch_size must be a whole number"),
    (SFTConfig, {"epochs": -3}, "epochs must be between"),
    (GRPOConfig, {"group_size": 1}, "group_size must be between 2"),
    (GRPOConfig, {"steps": 11}, "steps must be between 0 and 10"),
    (GRPOConfig, {"reward": "hack"}, "reward must be one of"),
    (GRPOConfig, {"max_steps": None}, "is empty"),
])
def test_bad_form_values_are_refused_with_the_setting_named(cls, values, message, tmp_path):
    from ivt_core.errors import IVTError
    from ivt_core.jobs import checked_config
    from ivt_core.workspace import Workspace
    from ui.config_form import config_from_form

    workspace = Workspace.open(tmp_path / "ws")
    with pytest.raises(IVTError, match=message):
        checked_config(workspace, cls.job_kind, config_from_form(cls, dict(values)))
    with workspace.connect() as db:
        assert db["jobs"].count == 0


@pytest.mark.parametrize("values, message", [
    ({"steps": -1}, "steps must be between 0 and 10"), ({"limit": 10 ** 20}, "limit must be between"),
    ({"stop": "oracle"}, "stop must be one of"), ({"render": "sketch"}, "render must be one of"),
])
def test_bad_evaluation_form_values(values, message, tmp_path):
    from ivt_core.config.evaluation import EvalConfig
    from ivt_core.errors import IVTError
    from ivt_core.jobs import checked_config
    from ivt_core.workspace import Workspace
    from ui.config_form import config_from_form

    workspace = Workspace.open(tmp_path / "ws")
    with pytest.raises(IVTError, match=message):
        checked_config(workspace, "eval", config_from_form(EvalConfig, dict(values), dataset="shapes", split="val"))


def test_the_evaluation_form_runs_a_model_on_a_server(tmp_path):
    """Explore's evaluation form: a server URL typed in evaluates the model on that server (no local checkpoint);
    a model evaluated on a server before is evaluated there again; a bad URL is refused by the job's check, naming
    the setting, with nothing queued; neither a model nor a URL is one line saying so."""
    from ivt_core.bootstrap import ensure_shipped_models
    from ivt_core.errors import InvalidInputError
    from ivt_core.evaluate import register_evaluated_model
    from ivt_core.families import FAMILIES
    from ivt_core.workspace import Workspace
    from ui.context import AppContext
    from ui.explore import evaluation_from_form, queue_evaluation

    workspace = Workspace.open(tmp_path / "ws")
    ensure_shipped_models(workspace)
    ctx = AppContext(workspace)
    with workspace.connect() as db:
        local = db.execute("SELECT id FROM models ORDER BY id LIMIT 1").fetchone()[0]
        served = register_evaluated_model(db, "toy@http://gpu-box:8000/v1", FAMILIES["qwen3_vl"],
                                          "http://gpu-box:8000/v1")
    typed = evaluation_from_form(ctx, local, "shapes/val", {"endpoint": " http://gpu-box:8000/v1 ",
                                                           "endpoint_model": "toy", "steps": 1})
    assert (typed.endpoint, typed.endpoint_model, typed.model, typed.adapter) == (
        "http://gpu-box:8000/v1", "toy", "", "")
    typed.check()  # what the job's submission checks: a server needs no checkpoint
    again = evaluation_from_form(ctx, served, "shapes/val", {})
    assert (again.endpoint, again.endpoint_model, again.model) == ("http://gpu-box:8000/v1", "toy", "")
    checkpoint = evaluation_from_form(ctx, local, "shapes/val", {"endpoint": "  "})
    assert checkpoint.model and not checkpoint.endpoint
    note = queue_evaluation(ctx, evaluation_from_form(ctx, None, "shapes/val", {"endpoint": "gpu-box:8000"}))
    assert "Not started" in note and "--endpoint must start with http:// or https://" in note
    with workspace.connect() as db:
        assert db["jobs"].count == 0
    with pytest.raises(InvalidInputError, match="pick a model, or give the URL of a server"):
        evaluation_from_form(ctx, None, "shapes/val", {})
