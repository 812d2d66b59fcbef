"""Training: ``train`` (a run folder) and ``fit``/``evaluate`` (the loop, reused by fine-tuning)."""
from .loop import evaluate, fit
from .run_folder import train

__all__ = ["evaluate", "fit", "train"]
