"""The options of the stages that write a checkpoint: ``train`` (:class:`TrainConfig`) and ``import``
(:class:`ImportConfig`), and the ``--model-kwargs`` both take."""

from __future__ import annotations

import json
from typing import Optional

from .. import choices
from ..errors import ConfigError
from .fields import check_device, check_fraction, check_positive, check_workers, config, option
from .texts import AMP, BATCH, DATA_DIR, DEVICE, MODEL_KWARGS, SEED, VAL_FRACTION, WORKERS


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
        check_width_mult(self)
        check_workers(self)


def check_width_mult(cfg) -> None:
    if cfg.width_mult is not None and not 0 < cfg.width_mult <= 4:
        raise ConfigError(f"--width-mult {cfg.width_mult}: use a value in (0, 4]")


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


@config
class ImportConfig:
    """``prune-snr import``: an architecture with the user's or a hub's weights, as a prune-snr checkpoint."""

    model: str = option(choices.MODELS.default, "Architecture:", choices=choices.MODELS, argument=True)
    model_kwargs: Optional[str] = option(None, MODEL_KWARGS)
    width_mult: Optional[float] = option(None, "Conv width scale the weights were trained at (vgg16).")
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
        check_width_mult(self)
        model_kwargs(self)
