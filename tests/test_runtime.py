"""Specs of runtime.py: devices under torchrun."""

import pytest


def test_a_numbered_gpu_under_torchrun_is_refused_in_one_line(monkeypatch):
    from prune_snr.errors import ConfigError
    from prune_snr.runtime import resolve_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="every rank on GPU 1"):
        resolve_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match="no CUDA device"):  # alone, cuda:1 is only refused where no GPU is visible
        resolve_device("cuda:1")


def test_loaders_take_the_workers_of_the_block_they_are_made_in_unless_given_their_own():
    from prune_snr.runtime import default_workers, loader_workers, make_loader

    assert make_loader(range(8), batch_size=4, shuffle=False).num_workers == default_workers()
    with loader_workers(2):
        assert make_loader(range(8), batch_size=4, shuffle=False).num_workers == 2
        assert make_loader(range(8), batch_size=4, shuffle=False, workers=0).num_workers == 0
    assert default_workers() == 0, "no GPU here: loader processes would only take the cores the model computes on"


def test_a_bad_workers_count_is_one_line():
    from prune_snr.config import MeasureConfig, PruneConfig, resolve
    from prune_snr.errors import ConfigError

    for kind in (MeasureConfig, PruneConfig):
        with pytest.raises(ConfigError, match="--workers -1: use 0"):
            resolve(kind, overrides={"workers": -1})


def test_cudnn_picks_its_fastest_convolutions_on_a_gpu_only(monkeypatch):
    import torch

    from prune_snr.runtime import tune_convolutions

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    tune_convolutions(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    tune_convolutions(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cuda.matmul.allow_tf32 is False, "heads and fields keep float32 matmuls"
