"""The options of each stage: one frozen dataclass per command, every field declared once with :func:`option`.

:class:`TrainConfig`, :class:`ImportConfig`, :class:`MeasureConfig`, :class:`PruneConfig` (with its nested
:class:`FineTuneConfig` and the :class:`MeasureConfig` of the measurement it makes for itself) and
:class:`SearchConfig` (around a :class:`PruneConfig`); each validates itself when built.
"""

from __future__ import annotations

import json
import math
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

# Help shared by the options several stages have.
DATA_DIR = "Folder holding the dataset files."
DEVICE = "auto, cpu or cuda[:N]."
SEED = "Random seed."
AMP = "bfloat16 autocast."
BATCH = "Batch size."
WORKERS = (
    "DataLoader worker processes for every pass over images (default: none where no GPU is visible; on a GPU machine "
    "its cores per torchrun rank less one, at most 8)."
)
MODEL_KWARGS = "JSON keyword arguments of a MODULE:CALLABLE architecture, e.g. '{\"width\": 2}'."
VAL_FRACTION = "Seeded, label-stratified part of the training split held out for decisions"
VAL_SOURCE = "Where the validation split comes from:"
SPLIT_SEED = (
    "Redraw the validation split with this seed from the images the checkpoint's training held out (use a "
    "--val-fraction below what it held out); varies the split between repeated trials."
)
CHECKPOINTS_DATA = "Default: the dataset the checkpoint was trained on."


@config
class TrainConfig:
    model: str = option(choices.MODELS.default, choices=choices.MODELS, result=True)
    model_kwargs: Optional[str] = option(None, MODEL_KWARGS)
    dataset: str = option("fashion-mnist", choices=choices.DATASETS, result=True)
    data_dir: Optional[str] = option(None, DATA_DIR)
    width_mult: Optional[float] = option(None, "Scale every conv width (vgg16).", result=True)
    labels: Optional[int] = option(None, "Keep only the first K labels.", flag="--num-labels", result=True)
    input_size: Optional[int] = option(
        None,
        "Image side in pixels (default: 32; ImageNet 224; an image folder's own size).",
        hidden_default=True,
        result=True,
    )
    epochs: int = option(2, "Training epochs.", result=True)
    batch_size: int = option(128, BATCH, result=True)
    lr: float = option(0.05, "Peak learning rate (SGD).", result=True)
    momentum: float = option(0.9, "SGD momentum.", result=True)
    weight_decay: float = option(5e-4, "L2 weight decay.", result=True)
    schedule: str = option(choices.SCHEDULES.default, "Learning-rate schedule:", choices=choices.SCHEDULES, result=True)
    label_smoothing: float = option(0.0, "Label smoothing of the training loss.", result=True)
    seed: int = option(0, SEED, result=True)
    device: str = option("auto", DEVICE)
    amp: bool = option(False, AMP)
    channels_last: bool = option(True, "Channels-last memory layout of the training batches.")
    augment: bool = option(True, "Random crop + flip on the training set.", result=True)
    workers: Optional[int] = option(None, WORKERS, hidden_default=True)
    # held out of training, so the decisions that read it see unseen images
    val_fraction: float = option(0.1, VAL_FRACTION + ".", result=True)
    out: Optional[str] = option(None, "Output folder.")

    def validate(self) -> None:
        model_kwargs(self)
        check_positive(self, "epochs", "batch_size", "lr")
        check_fraction(self, "val_fraction", allow_zero=True)
        check_device(self)
        choices.SCHEDULES.check(self.schedule)
        if self.width_mult is not None and not 0 < self.width_mult <= 4:
            raise ConfigError(f"width_mult={self.width_mult}: use a value in (0, 4]")
        check_workers(self)


@config
class MeasureConfig:
    dataset: Optional[str] = option(None, choices=choices.DATASETS, note=CHECKPOINTS_DATA, recorded=False)
    data_dir: Optional[str] = option(None, DATA_DIR, recorded=False)
    points: str = option("all", "all, or comma-separated module names.")
    pool: int = option(choices.POOL, "Adaptive average pooling p (the head sees C*p*p features).")
    threshold: float = option(choices.THRESHOLD, "θ for clusters and noise.")
    clusters: str = option(choices.CLUSTERS.default, "What a cluster is:", choices=choices.CLUSTERS)
    head_epochs: int = option(choices.HEAD_EPOCHS, "Epochs of each linear head (the cap with early stopping).")
    head_lr: float = option(choices.HEAD_LR, "Adam's learning rate for the heads (cosine over --head-epochs).")
    head_batch_size: int = option(1024, "Rows per mini-batch of the heads.")
    head_patience: int = option(
        choices.HEAD_PATIENCE,
        "Stop a head after this many epochs without a lower validation loss (0 = always --head-epochs).",
    )
    head_min_epochs: int = option(choices.HEAD_MIN_EPOCHS, "Epochs every head trains before it may stop.")
    head_optimizer: str = option(
        choices.HEAD_OPTIMIZERS.default, "The heads' optimiser:", choices=choices.HEAD_OPTIMIZERS
    )
    preset: Optional[str] = option(
        None, "Options taken together (flags given beside it win):", choices=choices.PRESET_CHOICES
    )
    label_sweep: Optional[list[int]] = option(
        None, "Label sweep: label counts, e.g. 3,5,10.", flag="--labels", recorded=False
    )
    label_seed: Optional[int] = option(None, "Draw the K labels at random with this seed.")
    fields_split: str = option(
        choices.FIELDS_SPLITS.default, "Split for the class means:", choices=choices.FIELDS_SPLITS
    )
    val_fraction: Optional[float] = option(
        None, VAL_FRACTION + " (default: what the checkpoint's training held out, else 0.1).", hidden_default=True
    )
    val_source: Optional[str] = option(
        None, VAL_SOURCE, choices=choices.VAL_SOURCES, note="Default: test for an imported checkpoint, else train."
    )
    split_seed: Optional[int] = option(None, SPLIT_SEED)
    held_out: Optional[float] = option(
        None, cli=False
    )  # what the checkpoint's training held out (read from it); split_seed draws from it
    cache_dtype: str = option(choices.CACHE_DTYPES.default, "Feature cache:", choices=choices.CACHE_DTYPES)
    # the heads' weights and scores stay float32
    head_dtype: str = option(
        choices.HEAD_DTYPES.default, "The heads' training rows and matmuls:", choices=choices.HEAD_DTYPES
    )
    train_per_class: Optional[int] = option(
        None,
        "Read and train the heads on at most N training images per label (seeded, "
        "label-stratified; the validation images stay the same).",
    )
    memory_budget: Optional[float] = option(
        None,
        "GiB the heads and the fields (phase 3, in chunks of filters) may hold at once "
        "(default: a quarter of the RAM).",
        hidden_default=True,
        recorded=False,
    )
    # None: off for `measure`, on for EfficientNet in the measurement prune makes
    expanded: Optional[bool] = option(
        None, "EfficientNet: also measure depthwise outputs.", hidden_default=True, recorded=False
    )
    save_fields: str = option(
        str(choices.SAVE_FIELDS),
        "Field matrices fields.npz keeps per point: the N highest-SNR filters', "
        "or all; every filter's statistics are kept.",
    )
    batch_size: int = option(256, BATCH)
    workers: Optional[int] = option(None, WORKERS, hidden_default=True, recorded=False)
    seed: int = option(0, SEED, recorded=False)  # recorded beside the options
    device: str = option("auto", DEVICE, recorded=False)
    amp: bool = option(False, AMP)

    def validate(self) -> None:
        check_positive(self, "pool", "head_epochs", "head_lr", "head_batch_size", "batch_size", "head_min_epochs")
        check_workers(self)
        if not (
            isinstance(self.head_patience, int) and not isinstance(self.head_patience, bool) and self.head_patience >= 0
        ):
            raise ConfigError(
                f"head_patience={self.head_patience}: use 0 (train every head head_epochs epochs) or more"
            )
        check_device(self)
        choices.FIELDS_SPLITS.check(self.fields_split)
        choices.CLUSTERS.check(self.clusters)
        choices.HEAD_OPTIMIZERS.check(self.head_optimizer)
        if self.preset is not None:
            choices.PRESET_CHOICES.check(self.preset)
        choices.CACHE_DTYPES.check(self.cache_dtype)
        choices.HEAD_DTYPES.check(self.head_dtype)
        if self.val_source is not None:
            choices.VAL_SOURCES.check(self.val_source)
        if self.val_fraction is not None:
            check_fraction(self, "val_fraction", allow_zero=self.fields_split != "val")
        if self.memory_budget is not None and not self.memory_budget > 0:
            raise ConfigError(f"memory_budget={self.memory_budget}: give GiB > 0")
        if self.train_per_class is not None and not self.train_per_class >= 1:
            raise ConfigError(f"train_per_class={self.train_per_class}: give 1 or more training images per label")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"threshold={self.threshold}: use a value in [0, 1)")
        if self.label_sweep is not None and any(k < 2 for k in self.label_sweep):
            raise ConfigError(f"labels={self.label_sweep}: every label count must be >= 2")
        fields_to_keep(self.save_fields)


def model_kwargs(cfg) -> dict | None:
    """``cfg.model_kwargs`` (JSON text) as a dict; only a ``MODULE:CALLABLE`` architecture takes them."""
    if cfg.model_kwargs is None:
        return None
    try:
        value = json.loads(cfg.model_kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--model-kwargs {cfg.model_kwargs!r}: not JSON ({exc.msg}); give an object, e.g. '{{\"width\": 2}}'"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs {cfg.model_kwargs!r}: give a JSON object, e.g. '{{\"width\": 2}}'")
    if ":" not in cfg.model or cfg.model.partition(":")[0] in ("timm", "torchvision"):
        raise ConfigError(f"--model-kwargs applies to a MODULE:CALLABLE architecture, not {cfg.model}")
    return value


def fields_to_keep(value) -> int | None:
    """``save_fields`` as a count of field matrices kept per point (``None``: all of them)."""
    text = str(value).strip().lower()
    if text == "all":
        return None
    if not isinstance(value, bool) and text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"save_fields={value!r}: give a positive number of filters per point, or all")


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
            raise ConfigError(f"finetune_epochs={self.epochs}: use 0 or more")
        check_positive(self, "lr")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"finetune_fraction={self.fraction}: use a fraction in (0, 1]")


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
    # on by default: fine-tuning reads batch statistics, so the fine-tuned weights are the same either way, while the
    # grade right after pruning (what keep-best and a search's one-shot proxy compare) becomes one that ranks prunings
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
            raise ConfigError(f"bn_recalibrate={self.bn_recalibrate}: use a number of batches, 0 (off) or more")
        if self.graph_timeout <= 0:
            raise ConfigError(f"graph_timeout={self.graph_timeout}: use a number of seconds above 0")
        check_target(self.target)
        if self.val_source is not None:
            choices.VAL_SOURCES.check(self.val_source)
        choices.METRICS.check(self.metric)
        choices.CRITERIA.check(self.criterion)
        choices.ALLOCATIONS.check(self.allocation)
        choices.GROUP_REDUCTIONS.check(self.group_reduction)
        choices.CUTS.check(self.cut)
        if self.truncate and self.cut == "budget" and self.metric == "latency":
            raise ConfigError("--cut budget counts params or MACs; use --metric params or macs with it")
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
                    "--remeasure splits a params or MACs budget into steps; use --metric params or macs with it"
                )
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"round_to={self.round_to}: use 1 or more")
        if not (isinstance(self.refit_epochs, int) and self.refit_epochs >= 0):
            raise ConfigError(f"refit_epochs={self.refit_epochs}: use 0 (keep the classifier) or more epochs")
        check_device(self)


@config
class ImportConfig:
    """``prune-snr import``: an architecture with the user's or a hub's weights, as a prune-snr checkpoint."""

    model: str = option(choices.MODELS.default, "Architecture:", choices=choices.MODELS, argument=True)
    model_kwargs: Optional[str] = option(None, MODEL_KWARGS)
    num_classes: Optional[int] = option(None, "Output labels of the model.", required=True)
    pretrained: bool = option(False, "Hub weights (timm/torchvision; their cache when offline).", flag="--pretrained")
    weights: Optional[str] = option(None, "A state_dict: .safetensors, or .pt/.pth read with weights_only=True.")
    input_size: Optional[int] = option(
        None, "Image side in pixels (default: 224 for timm:/torchvision:, else 32).", hidden_default=True
    )
    in_chans: int = option(3, "Input channels.")
    reset_classifier: bool = option(
        False, "Start a new classifier when the weights' label count differs.", flag="--reset-classifier"
    )
    dataset: Optional[str] = option(
        None, "The data the model will be measured on, graded into metrics.json:", choices=choices.DATASETS
    )
    data_dir: Optional[str] = option(None, DATA_DIR)
    batch_size: int = option(256, BATCH)
    device: str = option("auto", DEVICE)
    out: Optional[str] = option(None, "Folder for model.pt (+ metrics.json with --dataset).", required=True)

    def validate(self) -> None:
        if self.num_classes is None or self.num_classes < 2:
            raise ConfigError(f"--num-classes {self.num_classes}: give the number of output labels (2 or more)")
        if self.pretrained and self.weights:
            raise ConfigError("--pretrained and --weights both give weights; pass one")
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"--input-size {self.input_size}: give the image side in pixels")
        check_positive(self, "batch_size", "in_chans")
        check_device(self)
        model_kwargs(self)


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
        if self.prune.metric == "latency" and self.n_jobs > 1:
            raise ConfigError(
                "--metric latency times trials on this machine: use --n-jobs 1 so they do not disturb each other"
            )


def check_target(target) -> None:
    if not (
        isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target) and 0 < target < 1
    ):
        raise ConfigError(f"--target {target}: use a fraction strictly between 0 and 1 (0.5 = remove half)")
