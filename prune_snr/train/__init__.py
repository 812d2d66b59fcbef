"""Training: ``train`` (a run folder), ``fit``/``evaluate`` (the loop) and ``fine_tune`` (the loop after pruning)."""

from .finetune import fine_tune, finetune_options
from .loop import evaluate, fit
from .run_folder import train

__all__ = ["evaluate", "fine_tune", "finetune_options", "fit", "train"]
