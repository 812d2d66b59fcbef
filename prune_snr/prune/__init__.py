"""Pruning: SNR importance for torch-pruning, allocation, target search, truncation, AFCC."""
from .allocation import keep_weights, layer_ratios
from .importance import CRITERION_BUILDERS, SNRImportance, build_importance, filter_scores, point_conv
from .pipeline import prune, prune_checkpoint
from .target import Allocation, count, prune_to_target

__all__ = ["Allocation", "CRITERION_BUILDERS", "SNRImportance", "build_importance", "count", "filter_scores",
           "keep_weights", "layer_ratios", "point_conv", "prune", "prune_checkpoint", "prune_to_target"]
