"""Options as data: defaults -> ``--recipe FILE`` (YAML) -> flags given on the command line.

Each stage has one frozen dataclass of options (:class:`TrainConfig`, :class:`MeasureConfig`,
:class:`PruneConfig` with its nested :class:`FineTuneConfig` and the :class:`MeasureConfig` of
the measurement it makes for itself, :class:`SearchConfig` around a :class:`PruneConfig`),
built once by :func:`resolve` and handed to the library function of that stage. Every option is
declared once, as a field made by :func:`option` (``config/training.py``, ``measuring.py``,
``pruning.py``): its default, flag, help and choices, and whether a report shows it, a measurement
records it or a resumed training must keep it;
the command line, ``docs/cli.md``, the report's options and the resume checks are read from there.
A recipe is one flat YAML mapping that may hold the options of several stages (a paper setting:
model, dataset, epochs, pool, ...); every (nested) config takes the keys it knows, so a recipe's
``threshold`` reaches the measurement that ``prune`` or ``search`` makes. A key no stage knows, or
a value of the wrong type, is a :class:`ConfigError` naming the file and the key. The resolved
options are written into every run folder as ``config.yaml``.

Example:
    >>> cfg = resolve(PruneConfig, overrides={"target": 0.3, "finetune_epochs": 3, "threshold": 0.4})
    >>> cfg.target, cfg.finetune.epochs, cfg.measure.threshold
    (0.3, 3, 0.4)
"""

from . import spelling  # noqa: F401  (installs the spelling of every error)
from .fields import config, flag_of, key_of, option, shown_in_report
from .recipes import dump_yaml, flat_keys, flat_values, known_keys, load_recipe, resolve, to_dict
from .stages import (
    FineTuneConfig,
    ImportConfig,
    MeasureConfig,
    PruneConfig,
    SearchConfig,
    TrainConfig,
    check_target,
    fields_to_keep,
    model_kwargs,
)

__all__ = [
    "FineTuneConfig",
    "ImportConfig",
    "MeasureConfig",
    "PruneConfig",
    "SearchConfig",
    "TrainConfig",
    "check_target",
    "config",
    "dump_yaml",
    "fields_to_keep",
    "flag_of",
    "flat_keys",
    "flat_values",
    "key_of",
    "known_keys",
    "load_recipe",
    "model_kwargs",
    "option",
    "resolve",
    "shown_in_report",
    "to_dict",
]
