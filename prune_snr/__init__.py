"""prune-snr: measure per-filter label clusters and SNR in a trained CNN, then prune with it.

Public API::

    import prune_snr
    model = prune_snr.load("runs/fmnist/model.pt")
    data = prune_snr.build_dataset("fashion-mnist", "test")
"""
from .checkpoint import load
from .data import build_dataset
from .models import build_model

__all__ = ["build_dataset", "build_model", "load"]
__version__ = "0.1.0"
