"""Every set of choices a user picks from, one table each, and the defaults written once.

Config validation, the CLI's help text, the Optuna search space and ``--fix`` keys are all read
from these tables, so a new criterion or allocation is one new row here (plus its builder).
The module imports nothing heavy: the CLI builds its help from it before torch is loaded.

Example:
    >>> "l1" in CRITERIA, CRITERIA.default
    (True, 'l1')
    >>> ALLOCATIONS.check("knapsack")
    Traceback (most recent call last):
    ...
    prune_snr.errors.ConfigError: --allocation 'knapsack': choose one of uniform, measured, global
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .errors import ConfigError

#: θ of METHOD.md: a field entry is a cluster member when above θ x the filter's maximum.
THRESHOLD = 0.3
#: Adaptive average pooling p of the measurement (heads see C x p x p features per point).
POOL = 2
#: Epochs of each linear head: the cap when early stopping is on.
HEAD_EPOCHS = 30
#: Early stopping of a head: epochs without a lower validation loss before it stops (0 = train HEAD_EPOCHS epochs).
HEAD_PATIENCE = 3
#: Epochs every head trains before early stopping may stop it.
HEAD_MIN_EPOCHS = 5
#: Field matrices fields.npz keeps per point by default: the highest-SNR filters' (filters.png draws 4).
SAVE_FIELDS = 16


@dataclass(frozen=True)
class Choices:
    """The options of one flag: name -> one-line description, the default, and which a search draws."""

    flag: str
    options: dict[str, str]
    default: str | None = None
    searched: tuple[str, ...] = field(default=())

    def __iter__(self) -> Iterator[str]:
        return iter(self.options)

    def __contains__(self, name: object) -> bool:
        return name in self.options

    def __len__(self) -> int:
        return len(self.options)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.options)

    def check(self, value: str) -> str:
        if value not in self.options:
            raise ConfigError(f"{self.flag} {value!r}: choose one of {', '.join(self.options)}")
        return value

    def help(self, lead: str = "") -> str:
        """Help text for the flag: the lead sentence, each option with its description, the default."""
        listed = "; ".join(f"{name}: {text}" if text else name for name, text in self.options.items())
        default = f" Default {self.default}." if self.default else ""
        return f"{lead} {listed}.{default}".strip()


CRITERIA = Choices("--criterion", {
    "l1": "L1 norm of the filter group (torch-pruning)",
    "snr": "measured per-filter SNR",
    "snr-strength": "SNR x the filter's field strength",
    "snr-x-l1": "SNR x L1",
    "l2": "L2 norm",
    "bn": "BatchNorm scale",
    "lamp": "LAMP",
    "taylor": "first-order Taylor",
    "fpgm": "geometric median",
    "random": "seeded random",
}, default="l1",  # best after fine-tuning in the saliency study at equal MACs (docs/results.md)
    searched=("snr", "snr-strength", "snr-x-l1", "l1", "lamp", "taylor", "random"))
#: criteria read from a measurement (the rest are torch-pruning's own)
MEASURED_CRITERIA = ("snr", "snr-strength", "snr-x-l1")
#: the space restricted to torch-pruning's own options (benchmarks/search_compare.py)
BASELINE_CRITERIA = ("l1", "l2", "bn", "lamp", "taylor", "fpgm", "random")

ALLOCATIONS = Choices("--allocation", {
    "uniform": "one ratio for every layer",
    "measured": "per-layer ratios from the marginal validation head accuracy (METHOD.md)",
    "global": "torch-pruning's global ranking",
    "gain-per-mac": "per-layer ratios from the marginal validation head accuracy per MAC of the layer (HALP-like)",
    "snr": "per-layer ratios from the measured layer SNR",
}, default="measured", searched=("uniform", "measured", "global"))
#: allocations that read a measurement
MEASURED_ALLOCATIONS = ("measured", "gain-per-mac", "snr")

METRICS = Choices("--metric", {
    "params": "prunable parameters",
    "macs": "multiply-accumulates of one image",
    "latency": "ONNX Runtime CPU latency here",
}, default="params", searched=("params", "macs"))

CUTS = Choices("--cut", {
    "measured": "after the earliest point whose validation head accuracy is within --delta of the full model's",
    "budget": "after the deepest point whose cut alone meets --target, reading no accuracy (the depth baseline)",
    "deeper": "the deeper of the two: the measured cut, but never shallower than the budget needs (a params/MACs target)",
}, default="deeper")

FINETUNE_KEEP = Choices("--finetune-keep", {
    "last": "the model after the last fine-tuning epoch",
    "best": "the model after fine-tuning only if it raised validation accuracy, else the one before (a pure cut often loses by it)",
}, default="last")

SPACES = Choices("--space", {
    "full": "every criterion, allocation, θ, truncation and AFCC",
    "torch-pruning": "torch-pruning's own options only: criteria l1, l2, bn, lamp, taylor, fpgm, random; allocation uniform or global; "
                     "the depth cut that reads no accuracy (--cut budget); no AFCC, no measurement",
}, default="full")

GROUP_REDUCTIONS = Choices("--group-reduction", {"mean": "", "max": "", "sum": ""}, default="mean", searched=("mean", "max"))
SCHEDULES = Choices("--schedule", {"onecycle": "", "cosine": "", "constant": ""}, default="onecycle")
FIELDS_SPLITS = Choices("--fields-split", {
    "val": "the validation split (what decisions read)",
    "test": "the paper's figure",
    "train": "the training split",
}, default="val")
VAL_SOURCES = Choices("--val-source", {
    "train": "held out of the training split (a model prune-snr trained, which never saw it)",
    "test": "carved from the test split, the rest grades (a model whose training data is unknown: imported or pretrained)",
})  # no default: each checkpoint says which applies (train's keep train, imported ones test)
CACHE_DTYPES = Choices("--cache-dtype", {"float32": "", "float16": "half the disk and reads"}, default="float32")

DATASETS = Choices("--dataset", {
    "cifar10": "", "cifar100": "", "imagenet": "ImageFolder layout train/ val/", "fashion-mnist": "IDX files",
    "synthetic[:K]": "made on the fly", "imagefolder:PATH": "train/ and val/ (or test/) class folders",
})
MODELS = Choices("--model", {
    "vgg16": "batch-normed VGG-16 (--width-mult)", "efficientnet_b0": "timm's",
    "timm:NAME": "any timm model", "torchvision:NAME": "any torchvision classifier",
}, default="vgg16")
