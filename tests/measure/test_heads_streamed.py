"""Specs: heads from memory equal heads streamed, early stopping reads only validation rows."""

import numpy as np
import pytest
import torch

from prune_snr.config import MeasureConfig, resolve
from prune_snr.errors import ConfigError
from prune_snr.measure import heads as heads_module
from prune_snr.measure.feed import Rows
from prune_snr.measure.heads import train_heads

from .test_heads import cached_features


def splits(features, y, n_val=150, n_test=150):
    rows, targets = np.arange(len(y)), torch.from_numpy(y)
    train_end, val_end = len(y) - n_val - n_test, len(y) - n_test
    train = Rows(features, rows[:train_end], targets[:train_end])
    val = Rows(features, rows[train_end:val_end], targets[train_end:val_end])
    test = Rows(features, rows[val_end:], targets[val_end:])
    return train, {"val": val, "test": test}


def test_the_in_memory_path_gives_the_heads_of_the_streaming_path(tmp_path):
    features, y = cached_features(tmp_path)
    train, scored = splits(features, y)
    options = dict(num_classes=5, epochs=6, lr=0.05, batch_size=32)
    held = train_heads(train, scored, in_memory=True, **options)
    streamed = train_heads(
        train, scored, in_memory=False, memory_budget=3 * 32 * 72 * 12, **options
    )  # chunks of a few batches
    for name in features:
        assert torch.allclose(held[name].weight, streamed[name].weight, rtol=1e-5, atol=1e-5), name
        assert torch.allclose(held[name].bias, streamed[name].bias, rtol=1e-5, atol=1e-5), name
        assert held[name].accuracies == streamed[name].accuracies
    assert min(h.accuracies["test"] for h in held.values()) > 0.5


def test_early_stopping_stops_an_easy_problem_before_the_cap_and_from_the_same_memory_or_stream(tmp_path):
    features, y = cached_features(tmp_path)
    train, scored = splits(features, y)
    options = dict(num_classes=5, epochs=40, lr=0.05, batch_size=32, patience=2, min_epochs=3)
    held = train_heads(train, scored, **options)
    streamed = train_heads(train, scored, in_memory=False, memory_budget=3 * 32 * 72 * 12, **options)
    for name, head in held.items():
        assert 3 <= head.epochs_used < 40, (name, head.epochs_used)
        assert head.best_epoch <= head.epochs_used and head.best_epoch >= head.epochs_used - 2
        assert head.accuracies["test"] > 0.5
        assert streamed[name].epochs_used == head.epochs_used
        assert torch.allclose(head.weight, streamed[name].weight, rtol=1e-5, atol=1e-5), name


def test_early_stopping_never_reads_the_test_rows(tmp_path):
    features, y = cached_features(tmp_path)
    train, scored = splits(features, y)
    options = dict(num_classes=5, epochs=40, lr=0.05, batch_size=32, patience=2, min_epochs=3)
    clean = train_heads(train, scored, **options)
    poisoned_labels = (scored["test"].targets + 1) % 5
    poisoned_features = {n: np.array(f) for n, f in features.items()}
    for f in poisoned_features.values():
        f[scored["test"].index] = 1e3 * np.random.default_rng(1).standard_normal(f[scored["test"].index].shape)
    poisoned = {
        "val": Rows(poisoned_features, scored["val"].index, scored["val"].targets),
        "test": Rows(poisoned_features, scored["test"].index, poisoned_labels),
    }
    dirty = train_heads(Rows(poisoned_features, train.index, train.targets), poisoned, **options)
    for name in features:
        assert dirty[name].epochs_used == clean[name].epochs_used
        assert torch.equal(dirty[name].weight, clean[name].weight)
        assert dirty[name].accuracies["val"] == clean[name].accuracies["val"]
        assert dirty[name].accuracies["test"] < 0.5  # the test rows did change: only their score saw it


def test_patience_zero_and_no_validation_rows_train_every_head_the_cap(tmp_path):
    features, y = cached_features(tmp_path)
    train, scored = splits(features, y)
    options = dict(num_classes=5, epochs=7, lr=0.05, batch_size=32)
    fixed = train_heads(train, scored, **options)
    zero = train_heads(train, scored, patience=0, min_epochs=2, **options)
    no_val = train_heads(train, {"test": scored["test"]}, patience=2, min_epochs=2, **options)
    for name in features:
        assert fixed[name].epochs_used == zero[name].epochs_used == no_val[name].epochs_used == 7
        assert torch.equal(fixed[name].weight, zero[name].weight)
        assert torch.equal(fixed[name].weight, no_val[name].weight)


def test_the_early_stopping_options_are_validated():
    cfg = resolve(MeasureConfig, overrides={"head_patience": 0, "head_min_epochs": 2})
    assert (cfg.head_patience, cfg.head_min_epochs) == (0, 2)
    assert resolve(MeasureConfig).head_patience > 0, "early stopping is on by default"
    for bad in ({"head_patience": -1}, {"head_min_epochs": 0}, {"head_patience": True}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            resolve(MeasureConfig, overrides=bad)


def test_bfloat16_heads_score_like_float32_heads_from_memory_or_stream(tmp_path, monkeypatch):
    features, y = cached_features(tmp_path)
    train, scored = splits(features, y)
    options = dict(num_classes=5, epochs=6, lr=0.05, batch_size=32)
    full = train_heads(train, scored, in_memory=True, **options)
    small = train_heads(train, scored, in_memory=True, dtype=torch.bfloat16, **options)
    for name in features:
        assert torch.equal(small[name].weight, full[name].weight), "heads too small to gain from bfloat16 stay float32"
    monkeypatch.setattr(heads_module, "LOW_PRECISION_MIN_WEIGHTS", 0)
    held = train_heads(train, scored, in_memory=True, dtype=torch.bfloat16, **options)
    streamed = train_heads(
        train, scored, in_memory=False, memory_budget=3 * 32 * 72 * 12, dtype=torch.bfloat16, **options
    )
    for name in features:
        assert held[name].weight.dtype == torch.float32
        assert torch.allclose(held[name].weight, streamed[name].weight, rtol=1e-4, atol=1e-4), name
        assert not torch.equal(held[name].weight, full[name].weight), "the bfloat16 rows are really used"
        assert (held[name].weight - full[name].weight).norm() < 0.02 * full[name].weight.norm(), name
        for split in ("val", "test"):
            assert held[name].accuracies[split] == pytest.approx(full[name].accuracies[split], abs=0.02), (name, split)


def test_the_head_dtype_is_validated():
    assert resolve(MeasureConfig).head_dtype == "float32"
    assert resolve(MeasureConfig, overrides={"head_dtype": "bfloat16"}).head_dtype == "bfloat16"
    with pytest.raises(ConfigError, match="head_dtype="):
        resolve(MeasureConfig, overrides={"head_dtype": "float16"})
