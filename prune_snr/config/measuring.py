"""The options of ``measure`` (:class:`MeasureConfig`), also those of the measurement ``prune`` makes for itself."""

from __future__ import annotations

from typing import Optional

from .. import choices
from ..errors import ConfigError
from .fields import check_device, check_fraction, check_positive, check_workers, config, option
from .texts import AMP, BATCH, CHECKPOINTS_DATA, DATA_DIR, DEVICE, SEED, SPLIT_SEED, VAL_FRACTION, VAL_SOURCE, WORKERS


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
            raise ConfigError(f"--head-patience {self.head_patience}: use 0 (train every head all its epochs) or more")
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
            raise ConfigError(f"--memory-budget {self.memory_budget}: give GiB > 0")
        if self.train_per_class is not None and not self.train_per_class >= 1:
            raise ConfigError(f"--train-per-class {self.train_per_class}: give 1 or more training images per label")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"--threshold {self.threshold}: use a value in [0, 1)")
        if self.label_sweep is not None and any(k < 2 for k in self.label_sweep):
            raise ConfigError(f"--labels {','.join(map(str, self.label_sweep))}: every label count must be >= 2")
        fields_to_keep(self.save_fields)


def fields_to_keep(value) -> int | None:
    """``save_fields`` as a count of field matrices kept per point (``None``: all of them)."""
    text = str(value).strip().lower()
    if text == "all":
        return None
    if not isinstance(value, bool) and text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"--save-fields {value!r}: give a positive number of filters per point, or all")
