"""Pruning: SNR importance for torch-pruning, allocation, target search, truncation, AFCC."""

from .allocation import ALLOCATION_BUILDERS, keep_weights, layer_ratios
from .importance import (
    CRITERION_BUILDERS,
    SNRImportance,
    build_importance,
    filter_scores,
)
from .pipeline import prune, prune_checkpoint
from .report import PruneReport
from .target import Allocation, prune_to_target

__all__ = [
    "ALLOCATION_BUILDERS",
    "Allocation",
    "CRITERION_BUILDERS",
    "PruneReport",
    "SNRImportance",
    "build_importance",
    "filter_scores",
    "keep_weights",
    "layer_ratios",
    "prune",
    "prune_checkpoint",
    "prune_to_target",
]
