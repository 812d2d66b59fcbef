"""``prune-snr train``: a run folder with per-epoch checkpoints, final model and metrics."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..atomic import atomic_save_json, atomic_save_text
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import TrainConfig, dump_yaml, model_kwargs, to_dict
from ..data import build_dataset, hold_out
from ..errors import ConfigError
from ..models import build_model, count_macs_params
from ..runtime import seed_everything
from .loop import evaluate, fit

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
#: the options a resumed training must keep: those that change its result (``option(result=True)``)
_RESULT_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("result"))


def train(cfg: TrainConfig, *, resume: bool = False, progress=None, on_epoch=None) -> dict:
    """Train ``cfg.model`` on ``cfg.dataset`` into the run folder ``cfg.out``.

    Writes ``config.yaml``, ``checkpoint.pt`` after every epoch, and at the end ``model.pt``
    and ``metrics.json`` (test accuracy, params, MACs, per-epoch history).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ConfigError: the run folder already holds a run (without ``resume``), or a resumed run's
            options differ from the interrupted one's.
        DataError, ModelError, CheckpointError, TrainingError: see the stages.

    Example:
        >>> from prune_snr.config import TrainConfig, resolve
        >>> cfg = resolve(
        ...     TrainConfig, overrides={"dataset": "synthetic", "width_mult": 0.125, "epochs": 1, "out": "runs/x"}
        ... )
        >>> train(cfg)["test_accuracy"]  # doctest: +SKIP
    """
    if not cfg.out:
        raise ConfigError("train needs --out RUN_DIR")
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        _check_resumable(cfg, out, resume=resume)
    seed_everything(cfg.seed)
    common = dict(labels=cfg.labels, input_size=cfg.input_size)
    train_set = build_dataset(cfg.dataset, "train", cfg.data_dir, augment=cfg.augment, **common)
    classes = train_set.classes
    train_set, _ = hold_out(train_set, cfg.val_fraction)  # the validation split is for decisions, never for training
    test_set = build_dataset(cfg.dataset, "test", cfg.data_dir, **common)
    model = build_model(
        cfg.model,
        num_classes=len(classes),
        input_size=test_set.input_size,
        width_mult=cfg.width_mult,
        **({"model_kwargs": model_kwargs(cfg)} if cfg.model_kwargs else {}),
    )
    config = {"model": model.spec, "train": to_dict(cfg), "classes": list(classes)}
    atomic_save_text(out / "config.yaml", dump_yaml(cfg))  # only once data and model are known good

    t0 = time.perf_counter()
    history = fit(
        model,
        train_set,
        test_set,
        cfg,
        checkpoint_path=ckpt_path,
        checkpoint_extra={"kind": "train", "config": config},
        resume=resume,
        progress=progress,
        on_epoch=on_epoch,
    )
    model.eval()
    metrics = _metrics(cfg, model, test_set, history, started=t0)
    save_checkpoint(
        out / MODEL, {"kind": "train", "model": {k: v.cpu() for k, v in model.state_dict().items()}, "config": config}
    )
    atomic_save_json(out / METRICS, metrics)
    return metrics


def _check_resumable(cfg: TrainConfig, out: Path, *, resume: bool) -> None:
    """The run folder ``out`` already holds a run: it may only be resumed, with the options that change its result."""
    if not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    ckpt_path = out / CHECKPOINT
    previous = load_checkpoint(ckpt_path).get("config", {}).get("train", {})
    changed = [k for k in _RESULT_KEYS if k in previous and previous[k] != getattr(cfg, k)]
    if changed:
        k = changed[0]
        raise ConfigError(
            f"--resume: {k} was {previous[k]!r} in {ckpt_path}, now {getattr(cfg, k)!r}; use the same options or "
            f"another --out"
        )


def _metrics(cfg: TrainConfig, model, test_set, history: list[dict], *, started: float) -> dict:
    """What ``metrics.json`` holds: the final test accuracy (graded anew when no epoch ran), size and history."""
    final = history[-1] if history else evaluate(model, test_set, device=next(model.parameters()).device)
    macs, params = count_macs_params(model)
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "split": "test",
        "test_accuracy": final.get("test_accuracy", final.get("accuracy")),
        "params": params,
        "macs": macs,
        "epochs": history,
        "seconds_this_session": time.perf_counter() - started,
        "device": str(next(model.parameters()).device),
    }
