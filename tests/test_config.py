"""Specs of recipes and option resolution."""
from pathlib import Path

import pytest

from prune_snr.config import MeasureConfig, TrainConfig, load_recipe, resolve
from prune_snr.errors import ConfigError

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_flags_override_the_recipe_which_overrides_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: efficientnet_b0\nepochs: 7\nlr: 0.1\n")
    cfg = resolve(TrainConfig, recipe, {"epochs": 2, "lr": None})
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.batch_size) == ("efficientnet_b0", 2, 0.1, 128)


def test_unknown_recipe_key_is_an_error_naming_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="'epochz'"):
        resolve(TrainConfig, recipe)


@pytest.mark.parametrize("text,key", [("epochs: three\n", "epochs"), ("lr: -1\n", "lr"), ("amp: maybe\n", "amp"), ("schedule: step\n", "schedule")])
def test_bad_recipe_values_name_the_key(tmp_path, text, key):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=key):
        resolve(TrainConfig, recipe)


def test_recipe_that_is_not_a_mapping_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(recipe)


def test_label_sweep_accepts_a_comma_list():
    assert resolve(MeasureConfig, overrides={"label_sweep": "3,5,10"}).label_sweep == [3, 5, 10]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_resolves_for_every_command(recipe):
    assert resolve(TrainConfig, recipe).model
    assert resolve(MeasureConfig, recipe).pool >= 1
