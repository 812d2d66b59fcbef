"""The plan of a pruning run: every option settled once, before any work, and the context stages share.

:func:`settle` fills what a :class:`~prune_snr.config.PruneConfig` leaves open (the dataset, the
validation split, ``round_to``, the options of a measurement made here) from the model and the
measurement; :func:`plan` checks that the measurement may drive this run's decisions, loads the
splits and returns the :class:`Context` every stage reads. Nothing downstream derives a default.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from ..choices import MEASURED_ALLOCATIONS, MEASURED_CRITERIA
from ..config import MeasureConfig, PruneConfig
from ..data import DEFAULT_VAL_FRACTION, IndexSubset, build_dataset, hold_out, validation_split
from ..errors import ConfigError
from ..measure import Measurement
from ..models import expanded_by_default
from .report import PruneReport, Splits
from .target import default_round_to


@dataclass
class Context:
    """What the stages of one run share: the settled options, the unpruned model and the splits
    (fixed by :func:`plan`), and what earlier stages hand on to later ones."""

    cfg: PruneConfig  # settled (see settle): stages read it and never re-derive an option
    original: nn.Module  # the unpruned model, on the CPU in eval mode: what targets count from, the teacher
    splits: Splits
    backbone_saw_val: bool | None = None  # said by the caller (it knows how the backbone was trained); reported
    progress: object = None
    started: float = field(
        default_factory=time.perf_counter
    )  # the report's seconds count from the plan, data loading included
    # handed on from stage to stage
    measurement: Measurement | None = None  # the given one, or one made here; cut stages restrict it to what is left
    history: list = field(default_factory=list)  # torch-pruning's history of the channels pruned so far
    report: PruneReport | None = (
        None  # the parts so far: later stages read earlier ones (the unpruned model's accuracy)
    )
    data: dict | None = None  # the user's own train/val/test datasets (None: cfg.dataset names the data)
    finetune: Callable[[nn.Module], nn.Module | None] | None = (
        None  # the user's fine-tuning, instead of the built-in loop
    )
    out: Path | None = None  # the run's folder, where it keeps what it makes (set by the runner)
    resume: bool = False  # the run continues one that stopped: stages may read back what it kept

    def measure_data(self) -> dict:
        """What :func:`prune_snr.measure.measure` reads this run's data from: the dataset name, or
        the user's datasets."""
        return {"dataset": self.cfg.dataset} if self.data is None else {"dataset": None, **self.data}


#: ``cfg.dataset`` of a run on the user's own datasets (reports and config.yaml show it; nothing builds it by name).
USER_DATA = "user data"


def reads_measurement(cfg: PruneConfig) -> bool:
    """Whether a stage of this run decides on a measurement (filter scores, layer ratios, the cut)."""
    return cfg.criterion in MEASURED_CRITERIA or cfg.allocation in MEASURED_ALLOCATIONS or cfg.truncate


def settle(
    cfg: PruneConfig, model: nn.Module, *, dataset: str | None = None, measurement: Measurement | None = None
) -> PruneConfig:
    """``cfg`` with every open option settled: the dataset (``dataset``, else ``cfg.dataset``), the
    validation split (``cfg``'s fraction, source and ``split_seed``, else the measurement's, else 10 %
    of the training split), ``round_to`` (ONNX Runtime's alignment on this machine), and the options
    of a measurement made here (prune's data, split, seed and device; no label sweep; EfficientNet's
    depthwise points too).
    Settling a settled config changes nothing.

    Raises:
        ConfigError: no dataset, or a validation fraction outside (0, 1).
    """
    dataset = _dataset(cfg, dataset)
    recorded = measurement.config if measurement is not None else MeasureConfig()
    val_fraction = cfg.val_fraction
    if val_fraction is None:
        val_fraction = DEFAULT_VAL_FRACTION if recorded.val_fraction is None else recorded.val_fraction
    if not 0 < val_fraction < 1:
        raise ConfigError(
            f"--val-fraction {val_fraction}: prune decides on a validation split; use a fraction in (0, 1)"
        )
    val_source = cfg.val_source or (measurement.meta.get("val_source") if measurement is not None else None) or "train"
    split_seed = cfg.split_seed if cfg.split_seed is not None else recorded.split_seed
    held_out = cfg.held_out if cfg.held_out is not None else recorded.held_out
    expanded = expanded_by_default(model) if cfg.measure.expanded is None else cfg.measure.expanded
    # a measured criterion scores every channel group: measure a point for each (squeeze-excite gates too)
    points = "groups" if cfg.criterion in MEASURED_CRITERIA and cfg.measure.points == "all" else cfg.measure.points
    measure = dataclasses.replace(
        cfg.measure,
        points=points,
        dataset=dataset,
        data_dir=cfg.data_dir,
        val_fraction=val_fraction,
        val_source=val_source,
        split_seed=split_seed,
        held_out=held_out,
        seed=cfg.seed,
        device=cfg.device,
        label_sweep=None,
        expanded=expanded,
    )
    return dataclasses.replace(
        cfg,
        dataset=dataset,
        val_fraction=val_fraction,
        val_source=val_source,
        split_seed=split_seed,
        held_out=held_out,
        measure=measure,
        round_to=default_round_to() if cfg.round_to is None else cfg.round_to,
    )


def _dataset(cfg: PruneConfig, dataset: str | None) -> str:
    dataset = cfg.dataset if dataset is None else dataset
    if dataset is None:
        raise ConfigError("prune needs the dataset the model was trained on: pass one or set PruneConfig.dataset")
    return dataset


def check_decisions(cfg: PruneConfig, measurement: Measurement) -> None:
    """Refuse a measurement that cannot drive this run's decisions: one without validation figures, or
    whose fields come from the test split (which only grades)."""
    if not reads_measurement(cfg):
        return
    measurement.val_accuracies()  # raises for a measurement without validation figures
    if measurement.config.fields_split == "test":
        raise ConfigError(
            f"the measurement's fields come from the test split (--fields-split test), which only grades; "
            f"--criterion {cfg.criterion}/--allocation {cfg.allocation} would decide on it: re-measure with "
            "--fields-split val"
        )


def check_split(cfg: PruneConfig, measurement: Measurement) -> None:
    """Refuse a measurement whose validation split is not this run's (``cfg`` settled): another source, or
    another ``split_seed``."""
    if measurement.meta.get("val_source", "train") != cfg.val_source:
        raise ConfigError(
            f"--val-source {cfg.val_source} but the measurement decided on a validation split from the "
            f"{measurement.meta.get('val_source', 'train')} split; re-measure with --val-source {cfg.val_source}"
        )
    recorded = measurement.config.split_seed
    if recorded != cfg.split_seed:
        raise ConfigError(
            f"--split-seed {cfg.split_seed} but the measurement decided on the validation split of --split-seed "
            f"{recorded}; re-measure with --split-seed {cfg.split_seed}"
        )


def plan(
    model: nn.Module,
    cfg: PruneConfig,
    *,
    dataset: str | None = None,
    measurement: Measurement | str | Path | None = None,
    backbone_saw_val: bool | None = None,
    progress=None,
    data: dict | None = None,
    finetune=None,
) -> Context:
    """Settle ``cfg`` (a resolved config), check the measurement against it and load the splits: no other work.

    Args:
        measurement: a measurement of ``model``, or the folder it was saved to (default: ``cfg.measurement``'s
            folder, if any).

    Raises:
        ConfigError: see :func:`settle`, :func:`check_decisions` and :func:`check_split`.
        DataError: the dataset cannot be read.
    """
    started = time.perf_counter()
    if data is not None:
        dataset = USER_DATA
    _dataset(cfg, dataset)
    measurement = Measurement.given(measurement, cfg.measurement)
    if measurement is not None:
        check_decisions(cfg, measurement)
    cfg = settle(cfg, model, dataset=dataset, measurement=measurement)
    if measurement is not None:
        check_split(cfg, measurement)
    if cfg.truncate and model.spec.get("user_model"):
        raise ConfigError(
            f"--truncate rebuilds the cut network by its registered name; {type(model).__name__} is your own class: "
            "leave truncate off (drop_blocks=True drops residual blocks of any model)"
        )
    if data is not None:
        splits = user_splits(cfg, data, num_classes=model.spec["num_classes"])
    else:
        splits = load_splits(cfg, input_size=model.spec.get("input_size"), num_classes=model.spec["num_classes"])
    return Context(
        cfg=cfg,
        original=model.cpu().eval(),
        splits=splits,
        backbone_saw_val=backbone_saw_val,
        progress=progress,
        started=started,
        measurement=measurement,
        data=data,
        finetune=finetune,
    )


def user_splits(cfg: PruneConfig, data: dict, *, num_classes: int) -> Splits:
    """The splits of a run on the user's datasets (``cfg`` settled): their ``val``, else carved as :func:`load_splits`
    carves it (the same rows a measurement of the same data carves). The user's training set is fine-tuned on as
    given (its own transforms), so it is also the un-augmented view."""
    train, val, test = data["train"], data.get("val"), data["test"]
    if val is None and cfg.val_source == "test":
        test, val = hold_out(test, cfg.val_fraction, split_seed=cfg.split_seed, pool=cfg.held_out)
    elif val is None:
        rest, rows = validation_split(train.targets, cfg.val_fraction, split_seed=cfg.split_seed, pool=cfg.held_out)
        train, val = IndexSubset(train, rest), IndexSubset(train, rows)
    return Splits(train=train, plain=train, val=val, test=test, num_classes=num_classes)


def load_splits(cfg: PruneConfig, *, input_size: int | None, num_classes: int) -> Splits:
    """The splits of a pruning run (``cfg`` settled); the validation rows are held out of the training split,
    or with ``val_source="test"`` (imported weights) carved from the test split, which then grades on the rest
    (``split_seed``, ``held_out``: :func:`prune_snr.data.validation_split`'s ``split_seed`` and ``pool``)."""
    dataset, data_dir, val_fraction, split_seed = cfg.dataset, cfg.data_dir, cfg.val_fraction, cfg.split_seed
    train = build_dataset(dataset, "train", data_dir, input_size=input_size)
    if len(train.classes) != num_classes:
        raise ConfigError(f"the model has {num_classes} outputs but {dataset} has {len(train.classes)} labels")
    plain = build_dataset(dataset, "train", data_dir, input_size=input_size, augment=False)
    test = build_dataset(dataset, "test", data_dir, input_size=input_size)
    if cfg.val_source == "test":
        test, val = hold_out(test, val_fraction, split_seed=split_seed)
        return Splits(train=train, plain=plain, val=val, test=test, num_classes=num_classes)
    rest, val = validation_split(
        plain.targets, val_fraction, split_seed=split_seed, pool=cfg.held_out
    )  # one split, both views
    plain, val, train = IndexSubset(plain, rest), IndexSubset(plain, val), IndexSubset(train, rest)
    return Splits(train=train, plain=plain, val=val, test=test, num_classes=num_classes)
