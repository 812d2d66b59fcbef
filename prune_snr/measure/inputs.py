"""What a measurement reads: its training and test sets (a dataset name, ``(train_set, test_set)`` or the user's
data), the check that their label count is the model's, and which training rows the heads train and validate on."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset

from ..data import build_dataset, per_class_subset, validation_split
from ..data.user import UserDataset, fingerprint, user_data
from ..errors import DataError, ModelError
from ..models import logits_width, num_outputs, remember_input_shape


def measured_data(model: nn.Module, dataset, data_dir: str | None, *, train=None, val=None, test=None):
    """``(train_set, test_set, dataset_id, validation rows)`` of a measurement: a dataset name,
    ``(train_set, test_set)``, or the user's ``train``/``val``/``test`` (``Dataset`` or ``DataLoader``). A given ``val``
    is appended to the training set and its rows returned (None: the validation split is carved as ``val_source`` says).

    Raises:
        DataError: no data, a name beside ``train=``/``test=``, or the user's data that cannot be read (one line).
    """
    if (
        (train, test) == (None, None)
        and isinstance(dataset, (tuple, list))
        and not all(hasattr(d, "targets") and hasattr(d, "classes") for d in dataset)
    ):
        (train, test), dataset = dataset, None  # plain datasets: checked as the user's own
    data = user_data(
        lambda image: logits_width(model, image), dataset=dataset, train=train, val=val, test=test, command="measure"
    )
    given_val = None
    if data is not None:
        _every_label_seen(data["train"], data["val"])
        train_set, val_set, test_set = data["train"], data["val"], data["test"]
        remember_input_shape(model, train_set.image_shape)
        if val_set is not None:
            given_val = np.arange(len(train_set), len(train_set) + len(val_set))
            train_set = UserDataset(
                ConcatDataset([train_set, val_set]),
                torch.cat([train_set.targets, val_set.targets]),
                len(train_set.classes),
                train_set.image_shape,
            )
        dataset = (train_set, test_set)
    if dataset is None:
        raise DataError("measure needs data: a dataset name, (train_set, test_set), or train=/test= datasets")
    if isinstance(dataset, str):
        size = (getattr(model, "spec", None) or {}).get("input_size")
        train_set = build_dataset(dataset, "train", data_dir, augment=False, input_size=size)
        test_set = build_dataset(dataset, "test", data_dir, augment=False, input_size=size)
        if getattr(model, "spec", None) is None:  # a user's model on a named dataset: trace it on that data's shape
            remember_input_shape(model, tuple(test_set[0][0].shape))
        return train_set, test_set, f"{dataset}|{data_dir}|{size}", None
    train_set, test_set = dataset
    if getattr(model, "spec", None) is None:  # a user's model on datasets given as (train_set, test_set)
        remember_input_shape(model, tuple(train_set[0][0].shape))
    digest = f"{fingerprint(train_set)}{fingerprint(test_set)}"
    return train_set, test_set, f"{type(train_set).__name__}|{len(train_set)}|{len(test_set)}|{digest}", given_val


def _every_label_seen(train_set: UserDataset, val_set: UserDataset | None) -> None:
    """The field matrices are label x label over the classifier's outputs: a label without a training image would be
    a row of zeros in every one of them."""
    seen = set(train_set.targets.tolist()) | (set(val_set.targets.tolist()) if val_set is not None else set())
    missing = [c for c in range(len(train_set.classes)) if c not in seen]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        raise DataError(
            f"train=: no image of label(s) {shown} among the classifier's {len(train_set.classes)} outputs; measure "
            "needs every label (or a model with one output per label the data has)"
        )


def plan_train_rows(
    targets,
    *,
    val_fraction: float,
    val_source: str,
    per_class: int | None,
    seed: int,
    split_seed: int | None = None,
    pool: float | None = None,
    given_val: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(read, rest, val)``: the training images the feature pass reads (``None``: all of them), and the heads'
    rows and the validation rows as positions in what it reads (no validation rows when they come from the test split).

    The validation rows are carved from the whole training split first, so ``per_class`` (``--train-per-class``)
    changes only which of the remaining images the heads train on (a seeded, label-stratified draw of at most
    ``per_class`` per label), never which images are validated on.
    """
    if given_val is not None:  # the user's own validation set, appended to the training rows
        rest, val = np.arange(given_val[0] if len(given_val) else len(targets)), given_val
    elif val_source == "test":
        rest, val = np.arange(len(targets)), np.zeros(0, dtype=np.int64)
    else:
        rest, val = validation_split(targets, val_fraction, split_seed=split_seed, pool=pool)
    if per_class is None:
        return None, rest, val
    rest = per_class_subset(targets, rest, per_class, seed=seed)
    read = np.union1d(rest, val)
    return read, np.searchsorted(read, rest), np.searchsorted(read, val)


def check_label_count(model: nn.Module, dataset, train_set) -> int:
    """The dataset's label count, which must be the model's output count."""
    num_classes = len(train_set.classes)
    out_features = _num_outputs(model)
    if out_features is not None and out_features != num_classes:
        raise ModelError(
            f"the model has {out_features} outputs but {dataset if isinstance(dataset, str) else 'the dataset'} "
            f"has {num_classes} labels; measure it on the dataset it was trained on"
        )
    return num_classes


def _num_outputs(model: nn.Module) -> int | None:
    """The model's output count: its spec's or its ``num_classes``, else its classifier's (None: unknown)."""
    if getattr(model, "spec", None) is None and getattr(model, "num_classes", None) is None:
        try:
            return num_outputs(model)
        except ModelError:
            return None
    spec = getattr(model, "spec", None)
    if spec and "num_classes" in spec:
        return spec["num_classes"]
    return getattr(model, "num_classes", None)
