"""Options as data: defaults -> ``--recipe FILE`` (YAML) -> flags given on the command line.

Each command has one dataclass of options. A recipe is one flat YAML mapping that may hold
the options of several commands (a paper setting: model, dataset, epochs, pool, ...); each
command takes the keys it knows. A key no command knows, or a value of the wrong type, is a
:class:`ConfigError` naming the file and the key. The resolved options are written into every
run folder as ``config.yaml``.

Example:
    >>> cfg = resolve(TrainConfig, overrides={"epochs": 3})
    >>> cfg.epochs, cfg.model
    (3, 'vgg16')
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError

_CONFIGS: list[type] = []


def config(cls):
    """Declare an options dataclass whose keys recipes may use."""
    cls = dataclasses.dataclass(cls)
    _CONFIGS.append(cls)
    return cls


@config
class TrainConfig:
    model: str = "vgg16"
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
    schedule: str = "onecycle"
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = True
    augment: bool = True
    workers: int = 0
    val_fraction: float = 0.1  # held out of training, so the decisions that read it see unseen images
    out: Optional[str] = None

    def validate(self) -> None:
        _positive(self, "epochs", "batch_size", "lr")
        _fraction(self, "val_fraction", allow_zero=True)
        _device(self)
        _in(self, "schedule", ("onecycle", "cosine", "constant"))
        if self.width_mult is not None and not 0 < self.width_mult <= 4:
            raise ConfigError(f"width_mult={self.width_mult}: use a value in (0, 4]")
        if self.workers < 0:
            raise ConfigError(f"workers={self.workers}: use 0 or more")


@config
class MeasureConfig:
    dataset: Optional[str] = None  # default: the dataset the checkpoint was trained on
    data_dir: Optional[str] = None
    points: str = "all"
    pool: int = 2
    threshold: float = 0.3
    head_epochs: int = 30
    head_lr: float = 1e-3
    head_batch_size: int = 1024
    label_sweep: Optional[list[int]] = None
    label_seed: Optional[int] = None
    fields_split: str = "val"
    val_fraction: float = 0.1
    cache_dtype: str = "float32"
    memory_budget: Optional[float] = None  # GiB; default a quarter of the RAM
    expanded: bool = False
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    amp: bool = False

    def validate(self) -> None:
        _positive(self, "pool", "head_epochs", "head_lr", "head_batch_size", "batch_size")
        _device(self)
        _in(self, "fields_split", ("val", "test", "train"))
        _in(self, "cache_dtype", ("float32", "float16"))
        _fraction(self, "val_fraction", allow_zero=self.fields_split != "val")
        if self.memory_budget is not None and not self.memory_budget > 0:
            raise ConfigError(f"memory_budget={self.memory_budget}: give GiB > 0")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"threshold={self.threshold}: use a value in [0, 1)")
        if self.label_sweep is not None and any(k < 2 for k in self.label_sweep):
            raise ConfigError(f"labels={self.label_sweep}: every label count must be >= 2")


@config
class PruneConfig:
    dataset: Optional[str] = None  # default: the dataset the checkpoint was trained on
    data_dir: Optional[str] = None
    target: float = 0.5
    metric: str = "params"
    criterion: str = "l1"  # won the saliency study at equal MACs (README results); snr, snr-strength, snr-x-l1 stay options
    allocation: str = "measured"  # won the Fashion-MNIST comparison (see README results)
    group_reduction: str = "mean"
    iterative_steps: int = 1
    round_to: Optional[int] = None  # None: ONNX Runtime's CPU alignment here (prune/target.py machine_round_to); 1 = off
    latency_batch: int = 32  # at batch 1 a small model's latency is mostly per-layer overhead that channels do not remove
    truncate: bool = False
    delta: float = 0.005
    afcc: bool = False
    finetune_epochs: int = 1
    finetune_lr: float = 0.01
    distill: bool = False
    measurement: Optional[str] = None
    val_fraction: Optional[float] = None  # default: the measurement's (0.1)
    # the measurement prune makes for itself when --measurement is not given
    pool: int = 2
    threshold: float = 0.3
    head_epochs: int = 30
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    amp: bool = False

    def measure_options(self) -> dict:
        return {"pool": self.pool, "threshold": self.threshold, "head_epochs": self.head_epochs}

    def validate(self) -> None:
        import math as _math

        if self.val_fraction is not None:
            _fraction(self, "val_fraction", allow_zero=False)
        _positive(self, "pool", "head_epochs")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"threshold={self.threshold}: use a value in [0, 1)")

        if not (isinstance(self.target, float) and _math.isfinite(self.target) and 0 < self.target < 1):
            raise ConfigError(f"--target {self.target}: use a fraction strictly between 0 and 1 (0.5 = remove half)")
        _in(self, "metric", ("params", "macs", "latency"))
        _in(self, "allocation", ("uniform", "measured", "global"))
        _in(self, "group_reduction", ("mean", "max", "sum"))
        _positive(self, "iterative_steps", "batch_size", "finetune_lr")
        if self.finetune_epochs < 0:
            raise ConfigError(f"finetune_epochs={self.finetune_epochs}: use 0 or more")
        _positive(self, "latency_batch")
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"round_to={self.round_to}: use 1 or more")
        _device(self)


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


def _device(cfg) -> None:
    if not (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")):
        raise ConfigError(f"--device {cfg.device!r}: use auto, cpu or cuda[:N]")


def _in(cfg, name: str, choices) -> None:
    if getattr(cfg, name) not in choices:
        raise ConfigError(f"{name}={getattr(cfg, name)!r}: choose one of {', '.join(choices)}")


def known_keys() -> set[str]:
    return {f.name for cls in _CONFIGS for f in dataclasses.fields(cls)} | {"recipe"}


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


def resolve(cls, recipe: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Build ``cls`` from its defaults, then the recipe's keys, then non-``None`` overrides."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if recipe:
        for key, value in load_recipe(recipe).items():
            if key in hints:
                values[key] = _coerce(key, value, hints[key], f"recipe {recipe}")
    for key, value in (overrides or {}).items():
        if key not in hints:
            raise ConfigError(f"option {key!r} does not apply to this command")
        if value is not None:
            values[key] = _coerce(key, value, hints[key], "command line")
    cfg = cls(**values)
    cfg.validate()
    return cfg


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
