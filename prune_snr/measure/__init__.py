"""Measurement: features (one hooked pass, cached) -> heads -> fields (clusters, noise, SNR)."""

from .fields import FilterStats, field_matrices, filter_stats, layer_stats, layer_summary
from .pipeline import measure, measure_checkpoint
from .result import Measurement

__all__ = [
    "FilterStats",
    "Measurement",
    "field_matrices",
    "filter_stats",
    "layer_stats",
    "layer_summary",
    "measure",
    "measure_checkpoint",
]
