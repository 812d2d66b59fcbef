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
