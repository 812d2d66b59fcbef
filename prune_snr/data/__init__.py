"""Data: ``build_dataset`` (registry) and label subsets for the label sweep."""
from .registry import DATASETS, build_dataset
from .subset import LabelSubset, choose_labels

__all__ = ["DATASETS", "LabelSubset", "build_dataset", "choose_labels"]
