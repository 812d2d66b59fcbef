"""The search space: which pruning options a study draws, how Optuna draws each, and ``--fix`` pins."""

from __future__ import annotations

import optuna
import yaml

from ..choices import ALLOCATIONS, CRITERIA, CUTS, GROUP_REDUCTIONS, THRESHOLD
from ..errors import ConfigError

#: The search space, one row per parameter: how Optuna draws it. Every name is a key of
#: :class:`prune_snr.config.PruneConfig` and a ``--fix NAME=VALUE`` key; categorical rows come from
#: the rows of :mod:`prune_snr.choices` marked ``searched``; ``None`` as an int upper bound means
#: ``max_finetune_epochs``.
PARAMETERS = {
    "target": ("float", (0.2, 0.8)),
    "criterion": ("categorical", CRITERIA.searched),
    "allocation": ("categorical", ALLOCATIONS.searched),
    "threshold": ("categorical", (0.2, THRESHOLD, 0.4)),
    "group_reduction": ("categorical", GROUP_REDUCTIONS.searched),
    "truncate": ("categorical", (False, True)),
    "afcc": ("categorical", (False, True)),
    "finetune_epochs": ("int", (0, None)),
    "finetune_lr": ("log-float", (1e-3, 5e-2)),
}


#: ``--space`` (a row of :data:`prune_snr.choices.SPACES`): the parameters each restricted space changes (a 1-tuple
#: pins a parameter; ``None`` removes it: not drawn, and no ``--fix`` key).
SPACE_EDITS = {
    "full": {},
    # torch-pruning's own options, plus the depth cut that reads no measurement (--cut budget), so that a front
    # against this one isolates the measurement rather than truncation itself
    "torch-pruning": {
        "criterion": CRITERIA.baseline,
        "allocation": ALLOCATIONS.baseline,
        "truncate": (False, True),
        "cut": CUTS.baseline,
        "afcc": (False,),
        "threshold": None,
        "group_reduction": None,
    },
}


def space_of(name: str) -> dict:
    """The parameters a ``--space`` draws, which are also its ``--fix`` keys: name -> (kind, choices or range)."""
    rows = dict(PARAMETERS)
    for key, values in SPACE_EDITS[name].items():
        if values is None:
            del rows[key]
        else:
            rows[key] = ("categorical", values)
    return rows


def suggest(trial: optuna.Trial, name: str, fixed: dict, max_finetune_epochs: int, parameters: dict | None = None):
    """Draw parameter ``name`` (a fixed value comes through the sampler, see
    :func:`prune_snr.search.study.run_search`)."""
    kind, space = (parameters or PARAMETERS)[name]
    if kind == "categorical":
        choices = tuple(space) + ((fixed[name],) if name in fixed and fixed[name] not in space else ())
        return trial.suggest_categorical(name, choices)
    if kind == "int":
        return trial.suggest_int(name, space[0], max_finetune_epochs if space[1] is None else space[1])
    return trial.suggest_float(name, *space, log=kind == "log-float")


def parse_fix(text: str | None) -> dict:
    """``"truncate=false,target=0.5"`` -> ``{"truncate": False, "target": 0.5}`` (values read as YAML)."""
    fixed = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--fix {item!r}: write NAME=VALUE")
        fixed[name.strip()] = yaml.safe_load(value)
    return fixed
