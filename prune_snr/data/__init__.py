"""Data: ``build_dataset`` (registry), the validation split, and label subsets for the label sweep."""

from .registry import build_dataset
from .splits import DEFAULT_VAL_FRACTION, IndexSubset, hold_out, per_class_subset, validation_split
from .subset import LabelSubset, choose_labels

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "IndexSubset",
    "LabelSubset",
    "build_dataset",
    "choose_labels",
    "hold_out",
    "per_class_subset",
    "validation_split",
]
