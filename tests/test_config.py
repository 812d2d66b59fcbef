"""Specs of recipes and option resolution."""

import dataclasses
from pathlib import Path

import pytest

from prune_snr import choices
from prune_snr.config import MeasureConfig, PruneConfig, SearchConfig, TrainConfig, known_keys, load_recipe, resolve
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


@pytest.mark.parametrize(
    "text,key",
    [("epochs: three\n", "epochs"), ("lr: -1\n", "lr"), ("amp: maybe\n", "amp"), ("schedule: step\n", "schedule")],
)
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


@pytest.mark.parametrize("cls", [MeasureConfig, PruneConfig, SearchConfig])
def test_a_python_list_of_points_is_the_comma_list_in_every_stage_that_measures(cls):
    cfg = resolve(cls, overrides={"points": ["features.3", "features.7"]})
    measure_cfg = {
        MeasureConfig: lambda c: c,
        PruneConfig: lambda c: c.measure,
        SearchConfig: lambda c: c.prune.measure,
    }
    assert measure_cfg[cls](cfg).points == "features.3,features.7"
    with pytest.raises(ConfigError, match=r"^options: points=\[1, 2\] is not a valid str$"):
        resolve(cls, overrides={"points": [1, 2]})
    with pytest.raises(ConfigError, match=r"data_dir=\['a', 'b'\] is not a valid str"):  # one path, not a list
        resolve(cls, overrides={"data_dir": ["a", "b"]})


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_resolves_for_every_command(recipe):
    keys = load_recipe(recipe)
    train, measure = resolve(TrainConfig, recipe), resolve(MeasureConfig, recipe)
    prune, search = resolve(PruneConfig, recipe), resolve(SearchConfig, recipe)
    assert train.model == keys["model"] and train.epochs == keys["epochs"]
    for cfg in (measure, prune.measure, search.prune.measure):
        assert (cfg.pool, cfg.threshold) == (keys.get("pool", choices.POOL), keys.get("threshold", choices.THRESHOLD))
    for cfg in (prune, search.prune):
        assert cfg.target == keys.get("target", 0.5)
        assert cfg.finetune.epochs == keys.get("finetune_epochs", 1) and cfg.finetune.lr == keys.get(
            "finetune_lr", 0.01
        )


def test_a_recipe_key_reaches_every_nested_config_that_has_it_and_flags_win(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("threshold: 0.4\nfinetune_lr: 0.002\nlr: 0.3\nseed: 5\ntrials: 7\n")
    cfg = resolve(SearchConfig, recipe, {"seed": 6, "finetune_epochs": 3})
    assert cfg.trials == 7 and cfg.prune.measure.threshold == 0.4
    assert (cfg.prune.finetune.lr, cfg.prune.finetune.epochs) == (0.002, 3), "training's lr is not fine-tuning's"
    assert cfg.prune.seed == cfg.prune.measure.seed == 6


def test_configs_are_frozen_and_changed_only_by_replace():
    cfg = resolve(PruneConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.target = 0.9
    assert dataclasses.replace(cfg, target=0.9).target == 0.9 and cfg.target == 0.5


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("allocation", "knapsack", ", ".join(choices.ALLOCATIONS)),  # an unknown criterion: tests/test_choices.py
        ("metric", "flops", ", ".join(choices.METRICS)),
        ("cut", "middle", ", ".join(choices.CUTS)),
        ("target", 1.5, "between 0 and 1"),
        ("finetune_fraction", 0.0, "finetune_fraction"),
        ("finetune_keep", "first", ", ".join(choices.FINETUNE_KEEP)),
    ],
)
def test_a_bad_prune_option_is_one_error_listing_the_choices(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve(PruneConfig, overrides={key: value})


def test_every_choice_table_row_is_accepted_and_every_default_is_a_row():
    for table, key in (
        (choices.CRITERIA, "criterion"),
        (choices.ALLOCATIONS, "allocation"),
        (choices.METRICS, "metric"),
        (choices.CUTS, "cut"),
        (choices.GROUP_REDUCTIONS, "group_reduction"),
    ):
        assert table.default in table
        for name in table:
            assert getattr(resolve(PruneConfig, overrides={key: name}), key) == name
        assert set(table.searched) <= set(table)


def test_every_option_of_every_stage_is_a_recipe_key():
    from prune_snr.config import flat_keys

    for cls in (TrainConfig, MeasureConfig, PruneConfig, SearchConfig):
        assert flat_keys(cls) <= known_keys()
    assert {"finetune_epochs", "finetune_lr", "finetune_fraction", "distill", "cut", "threshold", "pool"} <= flat_keys(
        PruneConfig
    )
    assert {"trials", "fix", "pick"} <= flat_keys(SearchConfig) and "trials" not in flat_keys(PruneConfig)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"truncate": True, "cut": "budget", "metric": "latency"}, "cut='budget'"),
        ({"remeasure": True}, "iterative_steps=2"),
        ({"remeasure": True, "iterative_steps": 2, "criterion": "l1", "allocation": "uniform"}, "reads no measurement"),
        ({"remeasure": True, "iterative_steps": 2, "metric": "latency"}, "metric='params' or metric='macs'"),
    ],
)
def test_prune_options_that_do_not_work_together_are_one_error_naming_the_way_out(overrides, message):
    """The depth baseline counts params or MACs; --remeasure needs steps, a measured choice and a
    params or MACs budget."""
    with pytest.raises(ConfigError, match=message):
        resolve(PruneConfig, overrides=overrides)


@pytest.mark.parametrize("rule", ["size<5", "params<=0.5.5", "params<=", "accuracy>=nan", " , "])
def test_a_search_pick_rule_that_cannot_be_read_is_refused_before_any_trial_runs(rule):
    with pytest.raises(ConfigError, match=r"^pick=.*(KEY OP VALUE|at least one condition)"):
        resolve(SearchConfig, overrides={"pick": rule})
    assert resolve(SearchConfig, overrides={"pick": "params<=0.5, accuracy>=.9"}).pick


def test_a_searchs_worker_processes_are_its_own_and_do_not_become_its_trials_loader_workers():
    cfg = resolve(SearchConfig, overrides={"workers": 3, "threshold": 0.4})
    assert cfg.workers == 3 and cfg.prune.workers is None and cfg.prune.measure.workers is None
    assert cfg.prune.measure.threshold == 0.4  # any other flat key still reaches every nested config
    assert resolve(PruneConfig, overrides={"workers": 2}).measure.workers == 2
