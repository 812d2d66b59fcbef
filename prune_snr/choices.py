"""Every set of choices a user picks from, one table each, and the defaults written once.

Each row is an :class:`Option`: its help line and its properties (reads a measurement, needs
gradients, torch-pruning's own, searched). Config validation, the CLI's help text, the Optuna
search spaces (and so the ``--fix`` keys) and the tuples other modules test membership in are all
derived from these tables, so a new criterion or allocation is one new row here (plus its builder
in ``prune/importance.py`` / ``prune/allocation.py``). Dataset and model rows are tied to their
registries by ``tests/test_choices.py``. The module imports nothing heavy: the CLI builds its help
from it before torch is loaded.

Example:
    >>> "l1" in CRITERIA, CRITERIA.default, CRITERIA.measured
    (True, 'l1', ('snr', 'snr-strength', 'snr-x-l1'))
    >>> ALLOCATIONS.check("knapsack")
    Traceback (most recent call last):
    ...
    prune_snr.errors.ConfigError: allocation='knapsack': choose one of uniform, measured, global, gain-per-mac, snr
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .errors import ConfigError

#: θ of METHOD.md: a field entry is a cluster member when above θ x the filter's maximum.
THRESHOLD = 0.3
#: Adaptive average pooling p of the measurement (heads see C x p x p features per point).
POOL = 2
#: Epochs of each linear head: the cap when early stopping is on. With HEAD_LR, 10 epochs take 0.43x the time of
#: the former 30 epochs at 1e-3 and fit the heads better: the shallow heads were far from converged at 1e-3
#: (docs/results.md, "Are the heads converged?").
HEAD_EPOCHS = 10
#: Adam's learning rate for the heads (on standardized features, cosine over HEAD_EPOCHS).
HEAD_LR = 1e-2
#: Early stopping of a head: epochs without a lower validation loss before it stops (0 = train HEAD_EPOCHS epochs).
HEAD_PATIENCE = 3
#: Epochs every head trains before early stopping may stop it.
HEAD_MIN_EPOCHS = 3
#: Field matrices fields.npz keeps per point by default: the highest-SNR filters' (filters.png draws 4).
SAVE_FIELDS = 16


@dataclass(frozen=True)
class Option:
    """One row of a choice table: its help line and what the rest of the tool needs to know of it.

    Every property of a choice is a field here, so a new row states them all in one place (and a
    derived tuple cannot forget it).
    """

    help: str = ""
    measured: bool = False  # reads a measurement (a criterion's scores, an allocation's ratios)
    needs_gradients: bool = False  # torch-pruning accumulates gradients before it scores (Taylor)
    baseline: bool = False  # torch-pruning's own: what --space torch-pruning draws
    searched: bool = False  # what --space full draws


@dataclass(frozen=True)
class Choices:
    """The options of one flag: name -> :class:`Option` (a plain string is an option with that help), the default."""

    flag: str
    options: dict[str, Option]
    default: str | None = None

    def __post_init__(self):
        rows = {name: row if isinstance(row, Option) else Option(row) for name, row in self.options.items()}
        object.__setattr__(self, "options", rows)
        if self.default is not None and self.default not in rows:
            raise ValueError(f"{self.flag}: default {self.default!r} is not a row")

    def __iter__(self) -> Iterator[str]:
        return iter(self.options)

    def __contains__(self, name: object) -> bool:
        return name in self.options

    def __len__(self) -> int:
        return len(self.options)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.options)

    def where(self, prop: str) -> tuple[str, ...]:
        """The names whose row has ``prop`` set, in table order (the order a search space draws from)."""
        return tuple(name for name, row in self.options.items() if getattr(row, prop))

    @property
    def searched(self) -> tuple[str, ...]:
        return self.where("searched")

    @property
    def baseline(self) -> tuple[str, ...]:
        return self.where("baseline")

    @property
    def measured(self) -> tuple[str, ...]:
        return self.where("measured")

    def check(self, value: str) -> str:
        if value not in self.options:
            raise ConfigError(f"{self.flag} {value!r}: choose one of {', '.join(self.options)}")
        return value

    def help(self, lead: str = "") -> str:
        """Help text for the flag: the lead sentence, each option with its description, the default."""
        listed = "; ".join(f"{name}: {row.help}" if row.help else name for name, row in self.options.items())
        default = f" Default {self.default}." if self.default else ""
        return f"{lead} {listed}.{default}".strip()


# Row order is the order a search space draws from (Optuna refuses to resume a study whose categorical
# choices changed order), so the searched rows keep the order studies were started with.
CRITERIA = Choices(
    "--criterion",
    {
        "snr": Option("measured per-filter SNR", measured=True, searched=True),
        "snr-strength": Option("SNR x the filter's field strength", measured=True, searched=True),
        "snr-x-l1": Option("SNR x L1", measured=True, searched=True),
        "l1": Option("L1 norm of the filter group (torch-pruning)", baseline=True, searched=True),
        "l2": Option("L2 norm", baseline=True),
        "bn": Option("BatchNorm scale", baseline=True),
        "lamp": Option("LAMP", baseline=True, searched=True),
        "taylor": Option("first-order Taylor", baseline=True, searched=True, needs_gradients=True),
        "fpgm": Option("geometric median", baseline=True),
        "random": Option("seeded random", baseline=True, searched=True),
    },
    default="l1",
)  # best after fine-tuning in the saliency study at equal MACs (docs/results.md)
#: criteria read from a measurement (the rest are torch-pruning's own)
MEASURED_CRITERIA = CRITERIA.measured
#: the criteria of the space restricted to torch-pruning's own options (benchmarks/search_compare.py)
BASELINE_CRITERIA = CRITERIA.baseline
#: criteria that need gradient batches before pruning
NEEDS_GRADIENTS = CRITERIA.where("needs_gradients")

ALLOCATIONS = Choices(
    "--allocation",
    {
        "uniform": Option("one ratio for every layer", baseline=True, searched=True),
        "measured": Option(
            "per-layer ratios from the marginal validation head accuracy (METHOD.md)", measured=True, searched=True
        ),
        "global": Option("torch-pruning's global ranking", baseline=True, searched=True),
        "gain-per-mac": Option(
            "per-layer ratios from the marginal validation head accuracy per MAC of the layer (HALP-like)",
            measured=True,
        ),
        "snr": Option("per-layer ratios from the measured layer SNR", measured=True),
    },
    default="measured",
)
#: allocations that read a measurement
MEASURED_ALLOCATIONS = ALLOCATIONS.measured

METRICS = Choices(
    "--metric",
    {
        "params": Option("prunable parameters", searched=True),
        "macs": Option("multiply-accumulates of one image", searched=True),
        "latency": "ONNX Runtime CPU latency here",
    },
    default="params",
)

CUTS = Choices(
    "--cut",
    {
        "measured": "after the earliest point whose validation head accuracy is within --delta of the full model's",
        "budget": Option(
            "after the deepest point whose cut alone meets --target, reading no accuracy (the depth baseline)",
            baseline=True,
        ),
        "deeper": "the deeper of the two: the measured cut, but never shallower than the budget "
        "needs (a params/MACs target)",
    },
    default="deeper",
)

FINETUNE_KEEP = Choices(
    "--finetune-keep",
    {
        "last": "the model after the last fine-tuning epoch",
        "best": "the model after fine-tuning only if it raised validation accuracy, else the one before (a "
        "pure cut often loses by it)",
    },
    default="last",
)

SPACES = Choices(
    "--space",
    {
        "full": "every criterion, allocation, θ, truncation and AFCC",
        "torch-pruning": f"torch-pruning's own options only: criteria {', '.join(CRITERIA.baseline)}; "
        f"allocation {' or '.join(ALLOCATIONS.baseline)}; the depth cut that reads no accuracy (--cut "
        "budget); no AFCC, no measurement",
    },
    default="full",
)

GROUP_REDUCTIONS = Choices(
    "--group-reduction", {"mean": Option(searched=True), "max": Option(searched=True), "sum": ""}, default="mean"
)
SCHEDULES = Choices("--schedule", {"onecycle": "", "cosine": "", "constant": ""}, default="onecycle")
FIELDS_SPLITS = Choices(
    "--fields-split",
    {
        "val": "the validation split (what decisions read)",
        "test": "the paper's figure",
        "train": "the training split",
    },
    default="val",
)
VAL_SOURCES = Choices(
    "--val-source",
    {
        "train": "held out of the training split (a model prune-snr trained, which never saw it)",
        "test": "carved from the test split, the rest grades (a model whose training data is unknown: "
        "imported or pretrained)",
    },
)  # no default: each checkpoint says which applies (train's keep train, imported ones test)
CLUSTERS = Choices(
    "--clusters",
    {
        "blocks": "the paper authors' clusters: greedy complete blocks, both directions above θ "
        "(their code's return_squares)",
        "components": "connected components, an edge where either direction is above θ (joins "
        "chains and one-way pairs)",
    },
    default="blocks",
)
HEAD_OPTIMIZERS = Choices(
    "--head-optimizer",
    {
        "adam": "Adam, cosine schedule over --head-epochs",
        "sgd": "the paper authors': SGD, momentum 0.975, lr decayed x0.975 per epoch, L2 1e-3",
    },
    default="adam",
)
#: The paper authors' head training (github Shutshutnunte/AFCC) for --head-optimizer sgd.
SGD_MOMENTUM, SGD_DECAY, SGD_WEIGHT_DECAY = 0.975, 0.975, 1e-3
#: ``measure --preset NAME``: options taken together; flags given beside a preset win.
PRESETS = {
    "paper": {"head_optimizer": "sgd", "head_lr": 0.01, "head_patience": 0, "fields_split": "test"},
}
PRESET_CHOICES = Choices(
    "--preset",
    {
        "paper": "the paper authors' choices where they differ: SGD heads (momentum 0.975, lr 0.01 x0.975 per epoch, "
        "L2 1e-3), no early stopping, fields from the test split (figures only: prune refuses it for decisions)",
    },
)
CACHE_DTYPES = Choices("--cache-dtype", {"float32": "", "float16": "half the disk and reads"}, default="float32")
HEAD_DTYPES = Choices(
    "--head-dtype", {"float32": "", "bfloat16": "wide heads 2.7-3.5x faster on an AMX CPU"}, default="float32"
)

DATASETS = Choices(
    "--dataset",
    {
        "cifar10": "",
        "cifar100": "",
        "imagenet": "ImageFolder layout train/ val/",
        "fashion-mnist": "IDX files",
        "synthetic[:K]": "made on the fly",
        "imagefolder:PATH": "train/ and val/ (or test/) class folders",
    },
)
MODELS = Choices(
    "--model",
    {
        "vgg16": "batch-normed VGG-16 (--width-mult)",
        "efficientnet_b0": "timm's",
        "timm:NAME": "any timm model",
        "torchvision:NAME": "any torchvision classifier",
        "MODULE:CALLABLE": "a class or factory of your own code (--model-kwargs JSON; reading its checkpoints "
        "needs --trust-model-code)",
    },
    default="vgg16",
)
