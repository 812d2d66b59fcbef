import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Feature and dataset caches go to a per-session temp folder, never ~/.cache."""
    monkeypatch.setenv("PRUNE_SNR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A VGG-16 (width 1/8) trained 3 epochs on synthetic data: the shared small trained model."""
    from prune_snr.config import TrainConfig, resolve
    from prune_snr.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    os.environ.setdefault("PRUNE_SNR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    cfg = resolve(
        TrainConfig,
        overrides=dict(dataset="synthetic", width_mult=0.125, epochs=3, batch_size=64, out=str(out), device="cpu"),
    )
    metrics = train(cfg)
    return out, metrics
