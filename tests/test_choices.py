"""Specs of the choice tables: every row agrees with the registry, builder or search space it names."""

import re

import pytest

from prune_snr import choices
from prune_snr.config import PruneConfig, flat_keys, resolve
from prune_snr.data.registry import FAMILIES
from prune_snr.errors import ConfigError
from prune_snr.models import build_model
from prune_snr.models.registry import PREFIXES, list_models
from prune_snr.prune.allocation import ALLOCATION_BUILDERS
from prune_snr.prune.importance import CRITERION_BUILDERS, build_importance
from prune_snr.search.study import PARAMETERS, SPACE_EDITS, space_of
from tests.command_line import invoke, one_line_error


def test_model_rows_are_the_registered_models_and_the_prefixes():
    bare = {name for name in choices.MODELS if ":" not in name}
    prefixes = {name.partition(":")[0] for name in choices.MODELS if ":" in name and name != "MODULE:CALLABLE"}
    assert bare == set(list_models()) and prefixes == set(PREFIXES) and "MODULE:CALLABLE" in choices.MODELS


def test_dataset_rows_are_the_registered_families_with_their_argument():
    """``name`` takes no argument, ``name[:K]`` an optional one, ``name:PATH`` a required one."""
    rows = {}
    for name in choices.DATASETS:
        family, optional, required = re.fullmatch(r"([\w-]+)(\[:\w+\])?(:\w+)?", name).groups()
        rows[family] = "optional" if optional else "required" if required else "none"
    assert rows == {family: entry.arg for family, entry in FAMILIES.items()}


def test_every_criterion_row_has_a_builder_and_the_measured_ones_refuse_to_build_without_a_measurement():
    assert set(CRITERION_BUILDERS) == set(choices.CRITERIA)
    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    for name in choices.CRITERIA:
        if name in choices.CRITERIA.measured:
            with pytest.raises(ConfigError, match="needs a measurement"):
                build_importance(name, model=model)
        else:
            build_importance(name, model=model)


def test_an_unknown_criterion_is_one_error_listing_the_criteria_from_the_builder_the_options_and_the_command_line(
    tiny_run, tmp_path
):
    listed = ", ".join(choices.CRITERIA)
    with pytest.raises(ConfigError, match=listed):
        build_importance("magic", model=build_model("vgg16", num_classes=10, width_mult=0.125))
    with pytest.raises(ConfigError, match=listed):
        resolve(PruneConfig, overrides={"criterion": "magic"})
    out, _ = tiny_run
    one_line_error(invoke("prune", out / "model.pt", "--criterion", "magic", "--out", tmp_path / "p"), listed)
    assert not (tmp_path / "p").exists()


def test_every_allocation_that_reads_a_measurement_has_a_builder_and_no_other_needs_one():
    assert set(ALLOCATION_BUILDERS) == set(choices.ALLOCATIONS.measured)


def test_every_space_row_has_its_parameters_and_every_parameter_is_a_fix_key_of_prune():
    assert set(SPACE_EDITS) == set(choices.SPACES)
    for space in choices.SPACES:
        assert set(space_of(space)) <= flat_keys(PruneConfig), space
    assert set(PARAMETERS) <= flat_keys(PruneConfig)


@pytest.mark.parametrize(
    "key,table",
    [
        ("criterion", choices.CRITERIA),
        ("allocation", choices.ALLOCATIONS),
        ("group_reduction", choices.GROUP_REDUCTIONS),
        ("cut", choices.CUTS),
    ],
)
def test_the_spaces_draw_the_rows_marked_searched_and_the_torch_pruning_space_those_marked_baseline(key, table):
    full, own = space_of("full"), space_of("torch-pruning")
    if table.searched:
        assert full[key] == ("categorical", table.searched)
    if key in own:
        assert own[key] == ("categorical", table.baseline)
        assert not set(table.baseline) & set(table.measured), "torch-pruning's own options read no measurement"


def test_the_searched_criteria_keep_the_order_existing_studies_were_started_with():
    # Optuna refuses to resume a study whose categorical choices changed, order included
    assert choices.CRITERIA.searched == ("snr", "snr-strength", "snr-x-l1", "l1", "lamp", "taylor", "random")
    assert choices.ALLOCATIONS.searched == ("uniform", "measured", "global")
    assert choices.CRITERIA.baseline == ("l1", "l2", "bn", "lamp", "taylor", "fpgm", "random")
