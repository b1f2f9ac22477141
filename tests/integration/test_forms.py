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
