"""Every toy recipe under training/recipes is a config the toy trainer accepts as it is."""

from pathlib import Path

import pytest

from ivt_core.config.flags import parse_config
from ivt_core.config.toy import ToyConfig

RECIPES = sorted((Path(__file__).resolve().parents[2] / "training" / "recipes").glob("toy_*.json"))


def test_there_are_recipes():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_a_recipe_is_a_valid_toy_config(recipe):
    config = parse_config(ToyConfig, ["--config", str(recipe)], "toy_pretrain").check()
    parent = Path(config.init_from)
    # from scratch (the first toy), from the shipped base, or from what another recipe writes
    # (build/toy-colour-focus: toy_colour_focus.json; build/toy-base-v1: toy_base_v1.json)
    assert config.steps >= 1
    assert not config.init_from or parent.name == "toy-model" or (
        recipe.parent / f"{parent.name.replace('-', '_')}.json").is_file()
