"""Training: ``train`` (a run folder) and ``fit``/``evaluate`` (the loop, reused by fine-tuning)."""
from .loop import evaluate, fit, make_loader
from .run import count_macs_params, train

__all__ = ["count_macs_params", "evaluate", "fit", "make_loader", "train"]
