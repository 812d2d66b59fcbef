"""Specs of the streaming heads: chunking and grouping under a memory budget change nothing."""

import numpy as np
import pytest
import torch

from prune_snr.errors import DataError
from prune_snr.measure.feed import (
    BYTES_PER_READ_VALUE,
    BYTES_PER_VALUE,
    Moments,
    Rows,
    chunk_rows,
    class_means,
    plan_groups,
)
from prune_snr.measure.fields import field_matrices
from prune_snr.measure.heads import _cross_entropy, _set_gradients, _softmax, train_heads


def cached_features(tmp_path, n=600, dtype=np.float32):
    """Three points of a memory-mapped cache whose features carry the label."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, n)
    features = {}
    for i, channels in enumerate((4, 8, 6)):
        x = rng.standard_normal((n, channels, 4)).astype(np.float32)
        x[np.arange(n), y % channels, :] += 1.5 + i  # one filter per label lights up
        path = tmp_path / f"{i}.npy"
        np.save(path, x.astype(dtype))
        features[f"p{i}"] = np.load(path, mmap_mode="r")
    return features, y


def run(features, y, budget, epochs=4, **options):
    rows = np.arange(len(y))
    train = Rows(features, rows[: len(y) * 3 // 4], torch.from_numpy(y[: len(y) * 3 // 4]))
    held = Rows(features, rows[len(y) * 3 // 4 :], torch.from_numpy(y[len(y) * 3 // 4 :]))
    return train_heads(
        train, {"val": held}, num_classes=5, epochs=epochs, lr=0.05, batch_size=32, memory_budget=budget, **options
    )


def test_a_small_memory_budget_gives_the_heads_of_the_in_memory_path(tmp_path):
    features, y = cached_features(tmp_path)
    whole = run(features, y, budget=1 << 30)  # one chunk holds every row
    small, tiny = 3 * 32 * (72 * BYTES_PER_VALUE + 32 * BYTES_PER_READ_VALUE), 32 * 40 * BYTES_PER_VALUE
    widths = {"p0": 16, "p1": 32, "p2": 24}
    assert chunk_rows(list(widths.values()), batch_size=32, budget=small) == 96  # 3 mini-batches per chunk
    assert plan_groups(widths, batch_size=32, memory_budget=tiny) == [["p0"], ["p1"], ["p2"]]  # one point per group
    chunked, grouped = run(features, y, budget=small), run(features, y, budget=tiny)
    for name in features:
        for other in (chunked, grouped):
            assert torch.allclose(whole[name].weight, other[name].weight, rtol=1e-5, atol=1e-6), name
            assert whole[name].accuracies == other[name].accuracies
    assert min(h.accuracies["val"] for h in whole.values()) > 0.5


def test_held_rows_the_device_cannot_take_are_copied_a_chunk_at_a_time_to_the_same_heads(tmp_path, monkeypatch):
    """Rows held in host memory but too many for the GPU reach it a chunk of mini-batches at a time."""
    from prune_snr.measure import feed

    features, y = cached_features(tmp_path)
    sliced = run(features, y, budget=1 << 30)
    monkeypatch.setattr(feed, "_fits_device", lambda nbytes, device: False)
    chunks = []
    real = feed._gathered
    monkeypatch.setattr(
        feed, "_gathered", lambda x, spans, **kw: chunks.append(sum(e - s for s, e in spans)) or real(x, spans, **kw)
    )
    small = 3 * 32 * (72 * BYTES_PER_VALUE + 32 * BYTES_PER_READ_VALUE)  # 3 mini-batches per chunk
    gathered = run(features, y, budget=small, in_memory=True)
    assert set(chunks) == {90}, "the held rows go through the copy in chunks of 3 mini-batches of 30 rows"
    for name in features:
        assert torch.allclose(sliced[name].weight, gathered[name].weight, rtol=1e-5, atol=1e-6), name
        assert sliced[name].accuracies == gathered[name].accuracies


def test_memory_budget_splits_points_into_groups_that_fit():
    dims = {"a": 400, "b": 300, "c": 500}
    assert plan_groups(dims, batch_size=10, memory_budget=10 * 1000 * BYTES_PER_VALUE) == [["a", "b"], ["c"]]
    assert plan_groups(dims, batch_size=10, memory_budget=1 << 30) == [["a", "b", "c"]]
    assert plan_groups(dims, batch_size=10, memory_budget=1) == [["a"], ["b"], ["c"]], (
        "a point wider than the budget still gets a group"
    )


def test_a_float16_cache_gives_fields_within_a_thousandth(tmp_path):
    (tmp_path / "32").mkdir(), (tmp_path / "16").mkdir()
    full, y = cached_features(tmp_path / "32")
    half, _ = cached_features(tmp_path / "16", dtype=np.float16)
    a, b = run(full, y, 1 << 30), run(half, y, 1 << 30)
    rows, targets = np.arange(len(y)), torch.from_numpy(y)
    for name in full:
        Ma = field_matrices(class_means(full[name], rows, targets, 5), a[name].weight)
        Mb = field_matrices(class_means(half[name], rows, targets, 5), b[name].weight)
        assert torch.allclose(Ma, Mb, rtol=1e-3, atol=1e-3 * Ma.abs().max().item()), name
        assert a[name].accuracies["val"] == pytest.approx(b[name].accuracies["val"], abs=0.02)


def test_a_budget_the_process_already_exceeds_warns_and_still_reads_bounded_chunks():
    from prune_snr.measure.heads import MIN_CHUNK_BYTES, chunk_budget, resident_bytes

    assert resident_bytes() > 0
    with pytest.warns(UserWarning, match="already holds"):
        assert chunk_budget(1 << 20) == MIN_CHUNK_BYTES
    assert chunk_budget(resident_bytes() + (1 << 33)) > (1 << 32)


def test_feature_statistics_merged_from_chunks_match_one_float64_pass():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(
        (rng.standard_normal((20_000, 6)) * [1, 10, 1e-3, 5, 0, 2] + [0, 100, 3, -7, 1, 0]).astype(np.float32)
    )
    moments = Moments()
    for part in x.split(3_000):
        moments.add(part)
    mean, std = moments.finish()
    reference = x.double()
    assert torch.allclose(mean.double(), reference.mean(0), rtol=1e-6, atol=1e-6)
    assert torch.allclose(std.double(), reference.std(0, correction=0).clamp(min=1e-6), rtol=1e-5, atol=1e-6)


def test_heads_without_training_rows_say_so():
    features = {"p": np.zeros((4, 2, 1), np.float32)}
    with pytest.raises(DataError, match="no training rows"):
        train_heads(Rows(features, np.arange(0), torch.zeros(0, dtype=torch.long)), {}, num_classes=2)


def test_every_epoch_trains_on_every_row_even_when_the_rows_are_not_a_whole_number_of_batches(tmp_path, monkeypatch):
    """1,500 rows at batch 1,024: two mini-batches of 750 per epoch, not 1,024 rows and 476 never seen."""
    from prune_snr.measure import heads as module

    features, y = cached_features(tmp_path, n=1500)
    sizes = []
    real = module._set_gradients
    monkeypatch.setattr(
        module, "_set_gradients", lambda xs, labels, *a: (sizes.append(len(labels)), real(xs, labels, *a))
    )
    for in_memory in (True, False):
        sizes.clear()
        train_heads(
            Rows(features, np.arange(1500), torch.from_numpy(y)),
            {},
            num_classes=5,
            epochs=2,
            lr=0.05,
            batch_size=1024,
            in_memory=in_memory,
        )
        assert sizes == [750, 750, 750, 750], in_memory


@pytest.mark.parametrize("labels", [2, 10, 15, 16, 100])
def test_the_heads_softmax_and_cross_entropy_equal_torchs(labels):
    logits, y = 30 * torch.randn(3, 64, labels), torch.randint(0, labels, (64,))
    assert torch.allclose(_softmax(logits), torch.softmax(logits, dim=2), atol=1e-6)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, labels), y.repeat(3), reduction="none").view(3, 64)
    assert torch.allclose(_cross_entropy(logits, y), expected, atol=1e-4)


@pytest.mark.parametrize("labels", [10, 100])
def test_the_heads_gradients_equal_autograds(labels):
    torch.manual_seed(0)
    xs = [torch.randn(2, 32, 6), torch.randn(1, 32, 4)]  # two width classes: heads 0, 1 and head 2
    y = torch.randint(0, labels, (32,))
    weights = [torch.randn(labels, d, requires_grad=True) for d in (6, 6, 4)]
    biases = [torch.randn(labels, requires_grad=True) for _ in range(3)]
    _set_gradients(xs, y, [[0, 1], [2]], [True] * 3, weights, biases)
    written = [t.grad.clone() for t in weights + biases]
    for t in weights + biases:
        t.grad = None
    inputs = [xs[0][0], xs[0][1], xs[1][0]]
    sum(torch.nn.functional.cross_entropy(x @ w.T + b, y) for x, w, b in zip(inputs, weights, biases)).backward()
    for mine, autograd in zip(written, [t.grad for t in weights + biases]):
        assert torch.allclose(mine, autograd, atol=1e-6)


def test_bfloat16_rows_give_the_gradients_of_their_values_in_float32():
    torch.manual_seed(0)
    xs = [torch.randn(2, 64, 48).bfloat16()]
    y = torch.randint(0, 10, (64,))
    weights = [torch.randn(10, 48, requires_grad=True) for _ in range(2)]
    biases = [torch.randn(10, requires_grad=True) for _ in range(2)]
    _set_gradients(xs, y, [[0, 1]], [True, True], weights, biases)
    written = [t.grad.clone() for t in weights + biases]
    assert all(g.dtype == torch.float32 for g in written)
    for t in weights + biases:
        t.grad = None
    sum(torch.nn.functional.cross_entropy(x.float() @ w.T + b, y) for x, w, b in zip(xs[0], weights, biases)).backward()
    for mine, exact in zip(written, [t.grad for t in weights + biases]):
        assert (mine - exact).norm() < 0.02 * exact.norm()
