"""prune-snr: measure per-filter label clusters and SNR in a trained CNN, then prune with it.

Public API::

    import prune_snr
    model = prune_snr.load("runs/fmnist/model.pt")
    result = prune_snr.measure(model, "fashion-mnist")            # -> Measurement
    slim, report = prune_snr.prune(model, "fashion-mnist", target=0.5, measurement=result)
    prune_snr.export(slim, "slim.onnx")

(``prune_snr.measure`` and ``prune_snr.prune`` are the functions; their modules stay importable
as ``prune_snr.measure.fields`` etc. through ``from ... import``.)
"""
from .checkpoint import load
from .data import build_dataset
from .export import export_onnx as export
from .measure import measure
from .models import build_model
from .prune import prune

__all__ = ["build_dataset", "build_model", "export", "load", "measure", "prune"]
__version__ = "0.1.0"
