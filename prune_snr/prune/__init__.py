"""Pruning: SNR importance for torch-pruning, allocation, target search, truncation, AFCC."""
from .allocation import ALLOCATIONS, keep_weights, layer_ratios
from .importance import CRITERIA, SNRImportance, build_importance, filter_scores, point_conv
from .pipeline import prune, prune_checkpoint
from .report import PruneReport
from .target import Allocation, count, prune_to_target

__all__ = ["ALLOCATIONS", "Allocation", "CRITERIA", "PruneReport", "SNRImportance", "build_importance", "count", "filter_scores",
           "keep_weights", "layer_ratios", "point_conv", "prune", "prune_checkpoint", "prune_to_target"]
