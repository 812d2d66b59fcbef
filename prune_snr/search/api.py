"""``prune_snr.search``: the study on any model and the user's data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from torch import nn

from ..data.user import user_data
from ..errors import DataError
from ..models import logits_width, name_classifier
from .study import run_search


def search(
    model: nn.Module | str | Path,
    dataset: str | None = None,
    *,
    train=None,
    val=None,
    test=None,
    trials: int = 20,
    out: str | Path | None = None,
    classifier: str | None = None,
    progress=None,
    **options,
) -> optuna.Study:
    """Multi-objective Optuna search (validation accuracy vs size) over pruning options, on any model.

    Args:
        model: any ``nn.Module`` classifier (with ``train``/``test``, or a dataset name for a model prune-snr built), or
            the path of a ``model.pt``.
        train, val, test: your own data (a ``Dataset`` or ``DataLoader`` of ``(image, label)`` each; ``val`` optional).
        trials: finished trials the study should hold (a rerun on the same ``out`` resumes).
        classifier: the name of the layer that gives the logits, where it is not the last ``Linear``.
        out: the study folder (``study.db``, ``trials/NNNN``); default a new temporary folder.
        options: :class:`prune_snr.config.SearchConfig`'s flat keys (``metric``, ``space``, ``round_to``, ``fix``, ...);
            a searched parameter given here (``target=0.3``, ``criterion="l1"``) is pinned, as ``fix=`` pins it.

    Returns:
        The ``optuna.Study`` (its Pareto trials: ``study.best_trials``; open ``out/study.db`` in optuna-dashboard).

    Example:
        >>> study = prune_snr.search(MyNet(), train=train_data, test=test_data, trials=20)  # doctest: +SKIP
        >>> [t.values for t in study.best_trials]  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module) and classifier is not None:
        raise DataError("classifier= goes with a model object; a model.pt records its classifier")
    if not isinstance(model, nn.Module) and (train is not None or test is not None or val is not None):
        raise DataError(
            "train=/test= go with a model object; a model.pt searches on the dataset it records (or dataset=NAME)"
        )
    if isinstance(model, nn.Module):
        name_classifier(model, classifier)  # before the label count is read from it
    data = user_data(
        lambda image: logits_width(model, image), dataset=dataset, train=train, val=val, test=test, command="search"
    )
    if dataset is not None:
        options["dataset"] = dataset
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="prune-snr-search-"))
    return run_search(model, out=out, trials=trials, data=data, classifier=classifier, progress=progress, **options)
