"""Options as data: defaults -> ``--recipe FILE`` (YAML) -> flags given on the command line.

Each stage has one frozen dataclass of options (:class:`TrainConfig`, :class:`MeasureConfig`,
:class:`PruneConfig` with its nested :class:`FineTuneConfig` and the :class:`MeasureConfig` of
the measurement it makes for itself, :class:`SearchConfig` around a :class:`PruneConfig`),
built once by :func:`resolve` and handed to the library function of that stage. A recipe is one
flat YAML mapping that may hold the options of several stages (a paper setting: model, dataset,
epochs, pool, ...); every (nested) config takes the keys it knows, so a recipe's ``threshold``
reaches the measurement that ``prune`` or ``search`` makes. A key no stage knows, or a value of
the wrong type, is a :class:`ConfigError` naming the file and the key. The resolved options are
written into every run folder as ``config.yaml``.

Example:
    >>> cfg = resolve(PruneConfig, overrides={"target": 0.3, "finetune_epochs": 3, "threshold": 0.4})
    >>> cfg.target, cfg.finetune.epochs, cfg.measure.threshold
    (0.3, 3, 0.4)
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Optional

import yaml

from . import choices
from .errors import ConfigError

_CONFIGS: list[type] = []


def config(cls):
    """Declare a frozen options dataclass whose keys recipes may use."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    _CONFIGS.append(cls)
    return cls


def key(name: str) -> dict:
    """Field metadata: the flat recipe key / flag name of a nested config's field (``finetune_lr``)."""
    return {"key": name}


@config
class TrainConfig:
    model: str = choices.MODELS.default
    model_kwargs: Optional[str] = None  # JSON object: keyword arguments of a MODULE:CALLABLE architecture
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    width_mult: Optional[float] = None
    labels: Optional[int] = None
    input_size: Optional[int] = None
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = choices.SCHEDULES.default
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = True
    augment: bool = True
    workers: Optional[int] = None  # DataLoader worker processes; None: runtime.default_workers()
    val_fraction: float = 0.1  # held out of training, so the decisions that read it see unseen images
    out: Optional[str] = None

    def validate(self) -> None:
        model_kwargs(self)
        _positive(self, "epochs", "batch_size", "lr")
        _fraction(self, "val_fraction", allow_zero=True)
        _device(self)
        choices.SCHEDULES.check(self.schedule)
        if self.width_mult is not None and not 0 < self.width_mult <= 4:
            raise ConfigError(f"width_mult={self.width_mult}: use a value in (0, 4]")
        _workers(self)


@config
class MeasureConfig:
    dataset: Optional[str] = None  # default: the dataset the checkpoint was trained on
    data_dir: Optional[str] = None
    points: str = "all"
    pool: int = choices.POOL
    threshold: float = choices.THRESHOLD
    clusters: str = choices.CLUSTERS.default  # blocks (the paper authors' complete blocks) or components
    head_epochs: int = choices.HEAD_EPOCHS
    head_lr: float = choices.HEAD_LR
    head_batch_size: int = 1024
    head_patience: int = choices.HEAD_PATIENCE  # epochs without a lower validation loss before a head stops; 0 = run head_epochs
    head_min_epochs: int = choices.HEAD_MIN_EPOCHS  # epochs every head trains before it may stop
    head_optimizer: str = choices.HEAD_OPTIMIZERS.default  # adam, or the paper authors' sgd
    preset: Optional[str] = None  # options taken together (choices.PRESETS): "paper" = the authors' choices
    label_sweep: Optional[list[int]] = None
    label_seed: Optional[int] = None
    fields_split: str = choices.FIELDS_SPLITS.default
    val_fraction: Optional[float] = None  # default: what the checkpoint's training held out, else 0.1
    val_source: Optional[str] = None  # default: "test" for an imported checkpoint, else "train"
    split_seed: Optional[int] = None  # redraw the validation split (seeded) from the rows the checkpoint held out
    held_out: Optional[float] = None  # what the checkpoint's training held out (set from the checkpoint); split_seed draws from it
    cache_dtype: str = choices.CACHE_DTYPES.default
    head_dtype: str = choices.HEAD_DTYPES.default  # precision of the heads' training rows and matmuls (weights and scores stay float32)
    train_per_class: Optional[int] = None  # read and train the heads on at most N training images per label (seeded, stratified)
    memory_budget: Optional[float] = None  # GiB; default a quarter of the RAM
    expanded: Optional[bool] = None  # None: off for `measure`, on for EfficientNet in the measurement prune makes
    save_fields: str = str(choices.SAVE_FIELDS)  # field matrices kept per point: the N highest-SNR filters', or "all"
    batch_size: int = 256
    workers: Optional[int] = None  # DataLoader worker processes of the feature pass; None: runtime.default_workers()
    seed: int = 0
    device: str = "auto"
    amp: bool = False

    def validate(self) -> None:
        _positive(self, "pool", "head_epochs", "head_lr", "head_batch_size", "batch_size", "head_min_epochs")
        _workers(self)
        if not (isinstance(self.head_patience, int) and not isinstance(self.head_patience, bool) and self.head_patience >= 0):
            raise ConfigError(f"head_patience={self.head_patience}: use 0 (train every head head_epochs epochs) or more")
        _device(self)
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
            _fraction(self, "val_fraction", allow_zero=self.fields_split != "val")
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
        raise ConfigError(f"--model-kwargs {cfg.model_kwargs!r}: not JSON ({exc.msg}); give an object, e.g. '{{\"width\": 2}}'") from None
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


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tuning after pruning (SGD + cosine on the training split less its validation part)."""

    epochs: int = field(default=1, metadata=key("finetune_epochs"))
    lr: float = field(default=0.01, metadata=key("finetune_lr"))
    fraction: float = field(default=1.0, metadata=key("finetune_fraction"))  # < 1: a cheap proxy for search trials
    distill: bool = False
    keep: str = field(default=choices.FINETUNE_KEEP.default, metadata=key("finetune_keep"))

    def validate(self) -> None:
        choices.FINETUNE_KEEP.check(self.keep)
        if self.epochs < 0:
            raise ConfigError(f"finetune_epochs={self.epochs}: use 0 or more")
        _positive(self, "lr")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"finetune_fraction={self.fraction}: use a fraction in (0, 1]")


@config
class PruneConfig:
    dataset: Optional[str] = None  # default: the dataset the checkpoint was trained on
    data_dir: Optional[str] = None
    target: float = 0.5
    metric: str = choices.METRICS.default
    criterion: str = choices.CRITERIA.default
    allocation: str = choices.ALLOCATIONS.default
    group_reduction: str = choices.GROUP_REDUCTIONS.default
    iterative_steps: int = 1
    remeasure: bool = False  # with iterative_steps > 1: measure the pruned model anew between steps
    round_to: Optional[int] = None  # None: ONNX Runtime's CPU alignment here (prune/target.py default_round_to); 1 = off
    latency_batch: int = 32  # at batch 1 a small model's latency is mostly per-layer overhead that channels do not remove
    truncate: bool = False
    cut: str = choices.CUTS.default  # where --truncate cuts
    drop_blocks: bool = False  # drop residual blocks that cost < delta validation accuracy
    delta: float = 0.005
    afcc: bool = False
    bn_recalibrate: int = 0  # re-estimate BatchNorm statistics on this many training batches after pruning (prune/recalibrate.py)
    refit_epochs: int = 0  # retrain the classifier on the pruned model's frozen features (a measured head's training) first
    measurement: Optional[str] = None
    val_fraction: Optional[float] = None  # default: the measurement's (0.1)
    val_source: Optional[str] = None  # default: the measurement's, else "test" for an imported checkpoint, else "train"
    split_seed: Optional[int] = None  # default: the measurement's; redraw the validation split from the rows the checkpoint held out
    held_out: Optional[float] = None  # what the checkpoint's training held out (set from the checkpoint); split_seed draws from it
    exact_target: bool = False  # an unreachable --target is an error instead of the closest reachable point with a warning
    graph_timeout: float = 300.0  # s for torch-pruning to trace and group the channels (models/graph.py)
    batch_size: int = 128
    workers: Optional[int] = None  # DataLoader worker processes of every stage; None: runtime.default_workers()
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    # the measurement prune makes when --measurement is not given (on prune's dataset, split, seed, device)
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def validate(self) -> None:
        _workers(self)
        if self.val_fraction is not None:
            _fraction(self, "val_fraction", allow_zero=False)
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
        _positive(self, "iterative_steps", "batch_size", "latency_batch")
        if self.remeasure:
            if self.iterative_steps < 2:
                raise ConfigError("--remeasure re-measures between pruning steps; add --iterative-steps 2 or more")
            if self.criterion not in choices.MEASURED_CRITERIA and self.allocation not in choices.MEASURED_ALLOCATIONS:
                raise ConfigError(f"--remeasure: --criterion {self.criterion} with --allocation {self.allocation} reads no measurement; "
                                  f"use a measured criterion ({', '.join(choices.MEASURED_CRITERIA)}) or allocation "
                                  f"({', '.join(choices.MEASURED_ALLOCATIONS)})")
            if self.metric == "latency":
                raise ConfigError("--remeasure splits a params or MACs budget into steps; use --metric params or macs with it")
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"round_to={self.round_to}: use 1 or more")
        if not (isinstance(self.refit_epochs, int) and self.refit_epochs >= 0):
            raise ConfigError(f"refit_epochs={self.refit_epochs}: use 0 (keep the classifier) or more epochs")
        _device(self)


@config
class ImportConfig:
    """``prune-snr import``: an architecture with the user's or a hub's weights, as a prune-snr checkpoint."""

    model: str = choices.MODELS.default
    model_kwargs: Optional[str] = None  # JSON object: keyword arguments of a MODULE:CALLABLE architecture
    num_classes: Optional[int] = None
    pretrained: bool = False
    weights: Optional[str] = None
    input_size: Optional[int] = None  # default: 224 for timm:/torchvision: models, 32 for prune-snr's own
    in_chans: int = 3
    reset_classifier: bool = False
    dataset: Optional[str] = None  # given: the data the model will be measured on, graded into metrics.json
    data_dir: Optional[str] = None
    batch_size: int = 256
    device: str = "auto"
    out: Optional[str] = None

    def validate(self) -> None:
        if self.num_classes is None or self.num_classes < 2:
            raise ConfigError(f"--num-classes {self.num_classes}: give the number of output labels (2 or more)")
        if self.pretrained and self.weights:
            raise ConfigError("--pretrained and --weights both give weights; pass one")
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"--input-size {self.input_size}: give the image side in pixels")
        _positive(self, "batch_size", "in_chans")
        _device(self)
        model_kwargs(self)


@config
class SearchConfig:
    trials: int = 20
    storage: Optional[str] = None
    study_name: str = "prune-snr"
    timeout: Optional[float] = None
    n_jobs: int = 1
    # local worker processes on one journal file (search/parallel.py); its own key: the trials' loaders keep theirs
    workers: int = field(default=1, metadata={"own": True})
    max_finetune_epochs: int = 2
    proxy: Optional[str] = None  # "bn": trials graded right after pruning, BatchNorm recalibrated; "F": fine-tuned on F of train
    space: str = choices.SPACES.default
    fix: Optional[str] = None  # "truncate=false,target=0.5"
    pick: Optional[str] = None
    # every trial starts from these options; the drawn parameters replace theirs
    prune: PruneConfig = field(default_factory=PruneConfig)

    def validate(self) -> None:
        choices.SPACES.check(self.space)
        if self.trials < 1:
            raise ConfigError(f"--trials {self.trials}: use 1 or more")
        if self.proxy is not None and self.proxy != "bn" and not 0 < _number(self.proxy) <= 1:
            raise ConfigError(f"--proxy {self.proxy}: use bn, or a fraction of the training set in (0, 1]")
        if self.n_jobs < 1:
            raise ConfigError(f"--n-jobs {self.n_jobs}: use 1 or more")
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: use 1 or more")
        if self.max_finetune_epochs < 0:
            raise ConfigError(f"--max-finetune-epochs {self.max_finetune_epochs}: use 0 or more")
        if self.prune.metric == "latency" and self.n_jobs > 1:
            raise ConfigError("--metric latency times trials on this machine: use --n-jobs 1 so they do not disturb each other")


def check_target(target) -> None:
    if not (isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target) and 0 < target < 1):
        raise ConfigError(f"--target {target}: use a fraction strictly between 0 and 1 (0.5 = remove half)")


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name}={value}: must be a positive number")


def _fraction(cfg, name: str, *, allow_zero: bool) -> None:
    value = getattr(cfg, name)
    low_ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low_ok and value < 1):
        raise ConfigError(f"{name}={value}: use a fraction in {'[0' if allow_zero else '(0'}, 1) (0.1 = 10 % of the training split)")


def _workers(cfg) -> None:
    if cfg.workers is not None and not (isinstance(cfg.workers, int) and cfg.workers >= 0):
        raise ConfigError(f"--workers {cfg.workers}: use 0 (load in the main process) or more")


def _device(cfg) -> None:
    if not (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")):
        raise ConfigError(f"--device {cfg.device!r}: use auto, cpu or cuda[:N]")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _nested(hint) -> bool:
    return dataclasses.is_dataclass(hint)


def flat_keys(cls) -> set[str]:
    """The recipe keys / flag names a config (with its nested configs) understands."""
    hints = typing.get_type_hints(cls)
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        keys |= flat_keys(hints[f.name]) if _nested(hints[f.name]) else {f.metadata.get("key", f.name)}
    return keys


def known_keys() -> set[str]:
    return set().union(*(flat_keys(cls) for cls in _CONFIGS)) | {"recipe"}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe, checking every key against the options of all commands."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist; see recipes/ for examples") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option: value, got a {type(data).__name__}")
    recipe = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(recipe) - known_keys())
    if unknown:
        raise ConfigError(f"recipe {path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known_keys()))}")
    return recipe


def _coerce(name: str, value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(name, value, args[0], where)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(name, v, item, where) for v in value]
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name}={value!r} is not a valid {getattr(hint, '__name__', hint)}") from None
    return value


def resolve(cls, recipe: str | Path | None = None, overrides: dict[str, Any] | None = None, *, base=None):
    """Build ``cls`` from ``base`` (default: its defaults), then the recipe's keys, then non-``None`` overrides.

    Keys are flat (``finetune_lr``, ``threshold``): each reaches every nested config that has it.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - flat_keys(cls))
    if unknown:
        raise ConfigError(f"option {unknown[0]!r} does not apply to this command")
    values = load_recipe(recipe) if recipe else {}
    sources = [(values, f"recipe {recipe}"), (overrides, "command line")]
    preset = overrides.get("preset", values.get("preset", getattr(base, "preset", None)))
    if preset is not None:  # a preset's options come before the recipe's and the flags, which win
        choices.PRESET_CHOICES.check(preset)
        taken = choices.PRESETS[preset]
        if base is not None:  # a base config's own choices win too: the preset fills what it leaves at the default
            defaults = {f.name: f.default for f in dataclasses.fields(base)}
            taken = {k: v for k, v in taken.items() if getattr(base, k, None) == defaults.get(k)}
        sources.insert(0, (taken, f"preset {preset}"))
    return _build(cls, base, sources)


def _build(cls, base, sources: list[tuple[dict, str]]):
    hints = typing.get_type_hints(cls)
    changes: dict[str, Any] = {}
    own = {f.metadata.get("key", f.name) for f in dataclasses.fields(cls) if f.metadata.get("own")}  # keys nested configs skip
    inner = [({k: v for k, v in values.items() if k not in own}, where) for values, where in sources]
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _nested(hint):
            changes[f.name] = _build(hint, getattr(base, f.name) if base is not None else None, inner)
            continue
        name = f.metadata.get("key", f.name)
        for values, where in sources:
            if name in values:
                changes[f.name] = _coerce(name, values[name], hint, where)
    cfg = dataclasses.replace(base, **changes) if base is not None else cls(**changes)
    cfg.validate()
    return cfg


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
