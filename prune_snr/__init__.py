"""prune-snr: measure per-filter label clusters and SNR in a trained CNN, then prune with it.

Public API (any ``nn.Module`` classifier, the user's own ``Dataset`` or ``DataLoader`` of ``(images, labels)``)::

    import prune_snr
    result = prune_snr.measure(model, train=train_data, test=test_data)          # -> Measurement
    slim, report = prune_snr.prune(model, train=train_data, test=test_data, target=0.5, metric="macs",
                                   measurement=result, finetune=my_finetune)   # finetune optional
    study = prune_snr.search(model, train=train_data, test=test_data, trials=20)   # Optuna, accuracy vs size
    prune_snr.save(slim, "slim.pt")
    slim = prune_snr.load("slim.pt", model=MyNet())                          # the unpruned instance
    prune_snr.export(slim, "slim.onnx", example_input=torch.randn(1, 3, 32, 32))

A dataset name works too (``prune_snr.measure(model, "fashion-mnist")``), and ``prune_snr.load(path)`` rebuilds
what ``prune-snr train``/``prune`` wrote. ``prune_snr.measure``, ``prune``, ``search`` and ``export`` are the
functions; their subpackages are imported by their full names (``from prune_snr.measure.fields import
filter_stats``, ``importlib.import_module("prune_snr.prune")``), and each subpackage also holds its function
(``from prune_snr.export import export``).
"""

from .checkpoint import load, save
from .data import build_dataset
from .export import export
from .measure import measure
from .models import build_model
from .prune import prune
from .search import search

__all__ = ["build_dataset", "build_model", "export", "load", "measure", "prune", "save", "search"]
__version__ = "0.1.0"
