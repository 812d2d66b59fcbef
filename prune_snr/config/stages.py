"""The options of each stage: one frozen dataclass per command, every field declared once with :func:`option`.

:class:`TrainConfig`, :class:`ImportConfig`, :class:`MeasureConfig`, :class:`PruneConfig` (with its nested
:class:`FineTuneConfig` and the :class:`MeasureConfig` of the measurement it makes for itself) and
:class:`SearchConfig` (around a :class:`PruneConfig`); each validates itself when built. They are declared in
``training.py`` (train, import), ``measuring.py`` (measure) and ``pruning.py`` (prune, search), with the help
text several of them share in ``texts.py``; this module gathers them.
"""

from .measuring import MeasureConfig, fields_to_keep
from .pruning import FineTuneConfig, PruneConfig, SearchConfig, check_target
from .texts import (
    AMP,
    BATCH,
    CHECKPOINTS_DATA,
    DATA_DIR,
    DEVICE,
    MODEL_KWARGS,
    SEED,
    SPLIT_SEED,
    VAL_FRACTION,
    VAL_SOURCE,
    WORKERS,
)
from .training import ImportConfig, TrainConfig, model_kwargs

__all__ = [
    "AMP",
    "BATCH",
    "CHECKPOINTS_DATA",
    "DATA_DIR",
    "DEVICE",
    "MODEL_KWARGS",
    "SEED",
    "SPLIT_SEED",
    "VAL_FRACTION",
    "VAL_SOURCE",
    "WORKERS",
    "FineTuneConfig",
    "ImportConfig",
    "MeasureConfig",
    "PruneConfig",
    "SearchConfig",
    "TrainConfig",
    "check_target",
    "fields_to_keep",
    "model_kwargs",
]
