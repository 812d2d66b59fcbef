"""The options of ``prune`` (:class:`PruneConfig` with its nested :class:`FineTuneConfig` and
:class:`MeasureConfig`) and of ``search`` (:class:`SearchConfig`, around a :class:`PruneConfig`)."""

from __future__ import annotations

import math
import re
from typing import Optional

from .. import choices
from ..errors import ConfigError
from .fields import (
    ALWAYS,
    GIVEN,
    ON,
    as_number,
    check_device,
    check_fraction,
    check_positive,
    check_workers,
    config,
    option,
)
from .measuring import MeasureConfig
from .texts import AMP, BATCH, CHECKPOINTS_DATA, DATA_DIR, DEVICE, SEED, SPLIT_SEED, VAL_FRACTION, VAL_SOURCE, WORKERS
from .training import TrainConfig


@config
class FineTuneConfig:
    """Fine-tuning after pruning (SGD + cosine on the training split less its validation part)."""

    epochs: int = option(1, "Fine-tuning epochs after pruning.", key="finetune_epochs", report=ALWAYS)
    lr: float = option(0.01, "Fine-tuning learning rate (SGD, cosine schedule).", key="finetune_lr")
    fraction: float = option(
        1.0,
        "Fine-tune on this fraction of the training split (< 1: a cheap proxy for search trials).",
        key="finetune_fraction",
        report=ALWAYS,
    )
    # a pruned network is smaller than the one a decay was tuned for; a user may want less of it
    weight_decay: float = option(
        TrainConfig.weight_decay,
        "L2 weight decay while fine-tuning (train's default; a checkpoint's own training decay is not carried over).",
        key="finetune_weight_decay",
    )
    distill: bool = option(False, "Distill from the unpruned model while fine-tuning.")
    keep: str = option(
        choices.FINETUNE_KEEP.default,
        "Which model fine-tuning leaves:",
        choices=choices.FINETUNE_KEEP,
        key="finetune_keep",
    )

    def validate(self) -> None:
        choices.FINETUNE_KEEP.check(self.keep)
        if self.epochs < 0:
            raise ConfigError(f"--finetune-epochs {self.epochs}: use 0 or more")
        check_positive(self, "lr")
        if self.weight_decay < 0:
            raise ConfigError(f"--finetune-weight-decay {self.weight_decay}: use 0 or more")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--finetune-fraction {self.fraction}: use a fraction in (0, 1]")


@config
class PruneConfig:
    dataset: Optional[str] = option(None, choices=choices.DATASETS, note=CHECKPOINTS_DATA, report=ALWAYS)
    data_dir: Optional[str] = option(None, DATA_DIR)
    target: float = option(0.5, "Fraction of the prunable metric to remove, in (0, 1).", report=ALWAYS)
    metric: str = option(
        choices.METRICS.default,
        "What --target counts (a search: its size objective):",
        choices=choices.METRICS,
        report=ALWAYS,
    )
    criterion: str = option(
        choices.CRITERIA.default, "Filter ranking inside a layer:", choices=choices.CRITERIA, report=ALWAYS
    )
    allocation: str = option(
        choices.ALLOCATIONS.default, "How the budget is spread over layers:", choices=choices.ALLOCATIONS, report=ALWAYS
    )
    group_reduction: str = option(
        choices.GROUP_REDUCTIONS.default, "Aggregate coupled layers' SNR:", choices=choices.GROUP_REDUCTIONS
    )
    iterative_steps: int = option(1, "Prune in this many steps.", report=lambda cfg: cfg.remeasure)
    remeasure: bool = option(False, "With --iterative-steps: measure the pruned model anew between steps.", report=ON)
    # None: ONNX Runtime's CPU alignment here (prune/target.py default_round_to)
    round_to: Optional[int] = option(
        None,
        "Keep channel counts multiples of this (default: ONNX Runtime's CPU alignment here, 16 "
        "with AVX-512 else 8; 1 = off).",
        hidden_default=True,
        report=ALWAYS,
    )
    # at batch 1 a small model's latency is mostly per-layer overhead that channels do not remove
    latency_batch: int = option(
        32,
        "Batch size that --metric latency times (the report gives 1 and 32).",
        report=lambda cfg: cfg.metric == "latency",
    )
    truncate: bool = option(False, "Cut layers that add < delta accuracy.", report=ALWAYS)
    cut: str = option(
        choices.CUTS.default, "Where --truncate cuts:", choices=choices.CUTS, report=lambda cfg: cfg.truncate
    )
    drop_blocks: bool = option(
        False, "Drop residual blocks (identity shortcut) while validation accuracy stays within delta.", report=ON
    )
    delta: float = option(0.005, "Truncation threshold δ (accuracy fraction; 0.005 = 0.5 points).")
    afcc: bool = option(
        False, "Keep classifier weights inside filter clusters only.", report=ALWAYS
    )  # the AFCC stage's figures replace it
    # on by default: fine-tuning reads batch statistics, so the fine-tuned weights are the same either way (unless
    # --refit-epochs retrains the classifier first), while the grade right after pruning (what keep-best and a
    # search's one-shot proxy compare) becomes one that ranks prunings
    bn_recalibrate: int = option(
        50,
        "After pruning, re-estimate every BatchNorm's running statistics on N training batches (no "
        "gradients) before grading and fine-tuning; the report gives the accuracy both ways. 0 = off.",
        report=ON,
    )
    refit_epochs: int = option(
        0,
        "Retrain the classifier on the pruned model's frozen features for up to N epochs (a measured head's "
        "training, early stopping on validation) before fine-tuning; gives width-pruned and cut models equal "
        "training.",
        report=ON,
    )
    measurement: Optional[str] = option(None, "Folder of a prune-snr measure run of this model.")
    val_fraction: Optional[float] = option(
        None, VAL_FRACTION + " (default: the measurement's, else 0.1).", hidden_default=True, report=ALWAYS
    )
    val_source: Optional[str] = option(
        None,
        VAL_SOURCE,
        choices=choices.VAL_SOURCES,
        note="Default: the measurement's, else test for an imported checkpoint, else train.",
        report=ALWAYS,
    )
    split_seed: Optional[int] = option(None, SPLIT_SEED, report=GIVEN)
    held_out: Optional[float] = option(None, cli=False)  # what the checkpoint's training held out (read from it)
    exact_target: bool = option(
        False,
        "An unreachable --target is an error (default: prune to the closest reachable point, with a warning).",
        flag="--exact-target/--closest-target",
    )
    graph_timeout: float = option(
        300.0,
        "Seconds torch-pruning may take to trace and group the model's channels before prune stops with one line.",
    )
    batch_size: int = option(128, BATCH)
    workers: Optional[int] = option(None, WORKERS, hidden_default=True)
    seed: int = option(0, SEED, report=ALWAYS)
    device: str = option("auto", DEVICE)
    amp: bool = option(False, AMP)
    finetune: FineTuneConfig = option(factory=FineTuneConfig)
    # the measurement prune makes when --measurement is not given (on prune's dataset, split, seed, device)
    measure: MeasureConfig = option(factory=MeasureConfig)

    def validate(self) -> None:
        check_workers(self)
        if self.val_fraction is not None:
            check_fraction(self, "val_fraction", allow_zero=False)
        if self.bn_recalibrate < 0:
            raise ConfigError(f"--bn-recalibrate {self.bn_recalibrate}: use a number of batches, 0 (off) or more")
        if self.graph_timeout <= 0:
            raise ConfigError(f"--graph-timeout {self.graph_timeout}: use a number of seconds above 0")
        check_target(self.target)
        if self.val_source is not None:
            choices.VAL_SOURCES.check(self.val_source)
        choices.METRICS.check(self.metric)
        choices.CRITERIA.check(self.criterion)
        choices.ALLOCATIONS.check(self.allocation)
        choices.GROUP_REDUCTIONS.check(self.group_reduction)
        choices.CUTS.check(self.cut)
        if self.truncate and self.cut == "budget" and self.metric == "latency":
            raise ConfigError("--cut budget counts params or MACs; use --metric params or --metric macs with it")
        check_positive(self, "iterative_steps", "batch_size", "latency_batch")
        if self.remeasure:
            if self.iterative_steps < 2:
                raise ConfigError("--remeasure re-measures between pruning steps; add --iterative-steps 2 or more")
            if self.criterion not in choices.MEASURED_CRITERIA and self.allocation not in choices.MEASURED_ALLOCATIONS:
                raise ConfigError(
                    f"--remeasure: --criterion {self.criterion} with --allocation {self.allocation} reads no "
                    f"measurement; use a measured criterion ({', '.join(choices.MEASURED_CRITERIA)}) or allocation "
                    f"({', '.join(choices.MEASURED_ALLOCATIONS)})"
                )
            if self.metric == "latency":
                raise ConfigError(
                    "--remeasure splits a params or MACs budget into steps; "
                    "use --metric params or --metric macs with it"
                )
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"--round-to {self.round_to}: use 1 or more")
        if not (isinstance(self.refit_epochs, int) and self.refit_epochs >= 0):
            raise ConfigError(f"--refit-epochs {self.refit_epochs}: use 0 (keep the classifier) or more epochs")
        check_device(self)


@config
class SearchConfig:
    trials: int = option(20, "Finished trials the study should hold (a rerun resumes).")
    storage: Optional[str] = option(
        None, "Optuna storage URL, or a .log JournalStorage file (default: OUT/study.db).", hidden_default=True
    )
    study_name: str = option("prune-snr", "The study's name in the storage.")
    timeout: Optional[float] = option(None, "Stop starting trials after S seconds.")
    n_jobs: int = option(1, "Parallel trials in this process.")
    # its own key: the trials' loaders keep theirs
    workers: int = option(
        1,
        "Start K local worker processes on one journal file (--storage X.log, default OUT/study.log): K cores.",
        own=True,
    )
    max_finetune_epochs: int = option(2, "Upper bound of the fine-tune epochs searched.")
    proxy: Optional[str] = option(
        None,
        "Grade trials cheaply, then re-run the Pareto trials fully: bn = right after pruning with "
        "BatchNorm recalibrated (no fine-tuning); a fraction F = fine-tuned on F of the training set.",
    )
    space: str = option(choices.SPACES.default, "Search space:", choices=choices.SPACES)
    fix: Optional[str] = option(None, 'Pin parameters instead of searching them, e.g. "truncate=false,target=0.5".')
    pick: Optional[str] = option(
        None, 'Then write the most accurate Pareto trial meeting e.g. "params<=0.5" to OUT/pruned.pt.'
    )
    # every trial starts from these options; the drawn parameters replace theirs
    prune: PruneConfig = option(factory=PruneConfig)

    def validate(self) -> None:
        choices.SPACES.check(self.space)
        if self.trials < 1:
            raise ConfigError(f"--trials {self.trials}: use 1 or more")
        if self.proxy is not None and self.proxy != "bn" and not 0 < as_number(self.proxy) <= 1:
            raise ConfigError(f"--proxy {self.proxy}: use bn, or a fraction of the training set in (0, 1]")
        if self.n_jobs < 1:
            raise ConfigError(f"--n-jobs {self.n_jobs}: use 1 or more")
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: use 1 or more")
        if self.max_finetune_epochs < 0:
            raise ConfigError(f"--max-finetune-epochs {self.max_finetune_epochs}: use 0 or more")
        if self.pick:  # empty: no pick, as on the command line
            pick_conditions(self.pick)
        if self.prune.metric == "latency" and self.n_jobs > 1:
            raise ConfigError(
                "--metric latency times trials on this machine: use --n-jobs 1 so they do not disturb each other"
            )


def pick_conditions(rule: str) -> list[tuple[str, str, float]]:
    """``--pick``'s comma-separated ``KEY OP VALUE`` conditions as ``(key, op, value)``, checked before a search
    runs (see :func:`prune_snr.search.study.pick`).

    Example:
        >>> pick_conditions("params<=0.5, accuracy>=0.9")
        [('params', '<=', 0.5), ('accuracy', '>=', 0.9)]
    """
    conditions = []
    for part in filter(None, (p.strip() for p in rule.split(","))):
        m = re.fullmatch(r"(accuracy|params|macs)\s*(<=|>=|<|>)\s*(\S+)", part)
        value = as_number(m.group(3)) if m else math.nan
        if not math.isfinite(value):
            raise ConfigError(f"--pick {part!r}: write KEY OP VALUE with KEY accuracy|params|macs, e.g. params<=0.5")
        conditions.append((m.group(1), m.group(2), value))
    if not conditions:
        raise ConfigError(f"--pick {rule!r}: give at least one condition, e.g. params<=0.5")
    return conditions


def check_target(target) -> None:
    if not (
        isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target) and 0 < target < 1
    ):
        raise ConfigError(f"--target {target}: use a fraction strictly between 0 and 1 (0.5 = remove half)")
