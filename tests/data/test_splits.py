"""Specs of the validation split: seeded, stratified, disjoint, the same in every command."""

import numpy as np
import pytest
import torch

from prune_snr.data import build_dataset, hold_out, validation_split
from prune_snr.errors import DataError


def test_validation_split_takes_the_fraction_of_every_label_and_nothing_twice():
    targets = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    rest, val = validation_split(targets, 0.2)
    assert np.bincount(targets[val].numpy()).tolist() == [10, 6, 4]
    assert not set(rest) & set(val) and len(rest) + len(val) == 100


def test_validation_split_is_the_same_on_every_call_and_differs_with_the_seed():
    targets = torch.arange(200) % 4
    assert np.array_equal(validation_split(targets, 0.1)[1], validation_split(targets, 0.1)[1])
    assert not np.array_equal(validation_split(targets, 0.1)[1], validation_split(targets, 0.1, seed=1)[1])


def test_every_label_keeps_a_validation_row_and_a_training_row():
    rest, val = validation_split(torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]), 0.01)
    assert sorted(torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])[val].tolist()) == [0, 1]
    assert len(rest) == 8


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_a_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(DataError, match="val_fraction="):
        validation_split(torch.tensor([0, 1, 0, 1]), fraction)


def test_hold_out_keeps_the_dataset_interface():
    train = build_dataset("synthetic", "train", augment=False)
    rest, val = hold_out(train, 0.25)
    assert len(rest) + len(val) == len(train) and rest.classes == train.classes
    x, y = val[0]
    assert x.shape == train[0][0].shape and y == int(val.targets[0])
    assert hold_out(train, 0) == (train, None)


def test_a_smaller_fraction_validates_on_images_a_larger_one_held_out():
    targets = torch.arange(1000) % 10
    assert set(validation_split(targets, 0.05)[1]) <= set(validation_split(targets, 0.1)[1])


def test_a_split_seed_redraws_validation_only_from_what_the_training_held_out():
    targets = torch.arange(2000) % 10
    held_out = set(validation_split(targets, 0.1)[1].tolist())
    draws = [validation_split(targets, 0.05, split_seed=s, pool=0.1)[1] for s in range(4)]
    for val in draws:
        assert set(val.tolist()) <= held_out and np.bincount(targets[val].numpy()).tolist() == [10] * 10
    assert len({tuple(v.tolist()) for v in draws}) == 4  # each seed its own split
    assert np.array_equal(draws[1], validation_split(targets, 0.05, split_seed=1, pool=0.1)[1])


def test_a_split_seed_without_a_pool_redraws_from_every_row():
    targets = torch.arange(400) % 4  # e.g. a test split carved for imported weights
    a, b = (validation_split(targets, 0.1, split_seed=s)[1] for s in (0, 1))
    assert len(a) == len(b) == 40 and not np.array_equal(a, b)


def test_a_split_seed_cannot_validate_on_more_than_was_held_out():
    with pytest.raises(DataError, match="val_fraction=0.05 or less"):
        validation_split(torch.arange(100) % 2, 0.2, split_seed=0, pool=0.1)
