"""``prune-snr import``: a model someone else trained, as a prune-snr checkpoint.

The weights come from a hub (``--pretrained``: timm's or torchvision's, from their caches when
offline) or from the user's ``state_dict`` file (``--weights``). The checkpoint records where they
came from under ``config["import"]``; since the model's training data is unknown, every later
step carves its validation split from the test split (METHOD.md, "Splits").

Example:
    >>> cfg = resolve(ImportConfig, overrides={"model": "torchvision:resnet18", "num_classes": 10,
    ...                                       "weights": "resnet18.pth", "out": "runs/r18"})  # doctest: +SKIP
    >>> import_model(cfg)["params"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..atomic import atomic_save_json, atomic_save_text
from ..checkpoint import save_checkpoint
from ..config import ImportConfig, dump_yaml, model_kwargs, to_dict
from ..data import build_dataset
from ..errors import ConfigError, ModelError
from ..models import build_model, count_macs_params
from ..models.weights import hub_state_dict, load_weights, read_state_dict
from .loop import evaluate
from .run_folder import METRICS, MODEL

HUB_INPUT_SIZE = 224


def import_model(cfg: ImportConfig, *, progress=None) -> dict:
    """Build ``cfg.model`` with the given weights and write ``OUT/model.pt`` (and ``OUT/metrics.json``,
    graded on the test split of ``cfg.dataset``, when a dataset is given).

    Returns:
        The import report: source, weights' sha256, reset classifier keys, params, MACs (and accuracy).

    Raises:
        ConfigError / ModelError / CheckpointError / DataError: a one-line reason each.
    """
    if not cfg.out:
        raise ConfigError("import needs --out DIR")
    out = Path(cfg.out)
    if (out / MODEL).exists():
        raise ConfigError(f"{out / MODEL} exists; choose another --out or delete it")
    external = ":" in cfg.model
    input_size = cfg.input_size or (HUB_INPUT_SIZE if external else 32)
    test_set = _test_set(cfg, input_size) if cfg.dataset else None
    model = build_model(
        cfg.model,
        num_classes=cfg.num_classes,
        in_chans=cfg.in_chans,
        input_size=input_size,
        width_mult=cfg.width_mult,
        **({"model_kwargs": model_kwargs(cfg)} if cfg.model_kwargs else {}),
    )
    source, state, digest = _weights(cfg)
    reset = load_weights(model, state, source=source, reset_classifier=cfg.reset_classifier)
    model.eval()
    report = _report(cfg, model, input_size, digest, reset)
    if test_set is not None:
        graded = evaluate(model, test_set, device=cfg.device)
        report.update(
            {
                "dataset": cfg.dataset,
                "split": "test",
                "test_accuracy": graded["accuracy"],
                "note": "the whole test split; measure and prune carve their validation split from it",
            }
        )
    config = {
        "model": model.spec,
        "import": {**to_dict(cfg), **{k: report[k] for k in ("source", "weights_sha256", "reset_classifier")}},
    }
    if test_set is not None:
        config["classes"] = [str(c) for c in test_set.classes]
    save_checkpoint(out / MODEL, {"kind": "import", "model": model.state_dict(), "config": config})
    atomic_save_text(out / "config.yaml", dump_yaml(cfg))
    if test_set is not None:
        atomic_save_json(out / METRICS, report)
    return report


def _test_set(cfg: ImportConfig, input_size: int):
    """The test split of ``cfg.dataset`` the import is graded on, whose labels must match ``--num-classes``."""
    test_set = build_dataset(cfg.dataset, "test", cfg.data_dir, input_size=input_size, channels=cfg.in_chans)
    if len(test_set.classes) != cfg.num_classes:
        raise ConfigError(
            f"--num-classes {cfg.num_classes} but {cfg.dataset} has {len(test_set.classes)} labels; "
            f"pass --num-classes {len(test_set.classes)}"
        )
    return test_set


def _weights(cfg: ImportConfig) -> tuple[str, dict, str | None]:
    """``(source, state_dict, sha256)`` of the weights to import: the user's file (hashed) or the hub's (not)."""
    if cfg.weights:
        source, state = f"--weights {cfg.weights}", read_state_dict(cfg.weights)
        digest = hashlib.sha256(Path(cfg.weights).read_bytes()).hexdigest()
    elif cfg.pretrained:
        source, state, digest = f"--pretrained {cfg.model}", hub_state_dict(cfg.model, in_chans=cfg.in_chans), None
    else:
        raise ModelError("import needs weights: --pretrained (timm/torchvision hub) or --weights FILE (a state_dict)")
    return source, state, digest


def _report(cfg: ImportConfig, model, input_size: int, digest: str | None, reset: list[str]) -> dict:
    """The import report before grading: where the weights came from and the model's size."""
    macs, params = count_macs_params(model)
    return {
        "model": cfg.model,
        "source": "pretrained" if cfg.pretrained else "weights",
        "weights": cfg.weights,
        "weights_sha256": digest,
        "reset_classifier": reset,
        "num_classes": cfg.num_classes,
        "input_size": input_size,
        "params": params,
        "macs": macs,
        "val_source": "test",
    }
