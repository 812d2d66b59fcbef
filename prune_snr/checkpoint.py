"""The one home of prune-snr's checkpoint format.

A checkpoint is a dict of plain types and tensors, written atomically and read back with
``torch.load(weights_only=True)`` so that loading a file can never run code::

    {"format_version": 1, "kind": "train" | "pruned",
     "model": state_dict, "config": {...plain types...},
     "optimizer": ..., "scheduler": ..., "epoch": int, "rng": {...},
     "pruning": torch-pruning pruning_history (pruned models only)}

``config["model"]`` holds what :func:`prune_snr.models.build_model` needs to rebuild the
architecture (name, num_classes, width_mult, in_chans, input_size); a pruned model is rebuilt
by replaying its torch-pruning history on that architecture before loading the weights.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from .atomic import atomic_save_bytes
from .errors import CheckpointError, ConfigError
from .models import build_model, drop_blocks, example_input, name_classifier, remember_input_shape
from .models.user_code import TRUST_ENV, is_user_code, trusted, trusting
from .models.weights import load_plain

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Save ``payload`` (plain types and tensors only) atomically, stamping the format version."""
    payload = {"format_version": FORMAT_VERSION, **payload}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_save_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a prune-snr checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, holds pickled objects, or was
            not written by prune-snr.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the model.pt or pruned.pt that prune-snr wrote")
    payload = load_plain(
        path,
        name=f"checkpoint {path}",
        damaged="is corrupt or truncated ({why}); re-run the step that wrote it",
        refused="holds objects other than tensors and plain data and was refused (weights_only=True); "
        "re-save it as a state_dict",
    )
    if not isinstance(payload, dict) or "format_version" not in payload or "model" not in payload:
        raise CheckpointError(
            f"{path} is not a prune-snr checkpoint (no format_version/model keys); pass a file written by prune-snr "
            f"train or prune"
        )
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {payload['format_version']}, newer than this prune-snr ({FORMAT_VERSION}); "
            f"upgrade prune-snr"
        )
    return payload


def trained_on(payload: dict) -> tuple[str | None, str | None]:
    """``(dataset, data_dir)`` a trained or pruned checkpoint was made with, or an imported one was graded
    on (``None`` if unrecorded)."""
    config = payload.get("config", {})
    train = config.get("train") or config.get("import") or {}
    return train.get("dataset") or config.get("report", {}).get("dataset"), train.get("data_dir")


def imported(payload: dict) -> bool:
    """Whether the checkpoint's weights come from outside prune-snr (``prune-snr import``), directly or
    through a prune of such a model: its training data is unknown."""
    config = payload.get("config", {})
    return payload.get("kind") == "import" or "import" in config or config.get("report", {}).get("val_source") == "test"


def default_val_source(payload: dict) -> str:
    """Where a checkpoint's validation split comes from unless the user says: ``test`` for imported
    weights (their training split may hold any image), else ``train`` (the part its training held out)."""
    return "test" if imported(payload) else "train"


def with_trained_data(cfg, payload: dict, checkpoint):
    """``cfg`` (a frozen config with ``dataset``/``data_dir``) completed with what ``payload`` was trained
    on where the config leaves them unset; no dataset either way is a one-line error."""
    import dataclasses

    recorded, recorded_dir = trained_on(payload)
    cfg = dataclasses.replace(cfg, dataset=cfg.dataset or recorded, data_dir=cfg.data_dir or recorded_dir)
    if not cfg.dataset:
        raise ConfigError(f"{checkpoint} does not record its dataset; pass --dataset")
    return cfg


def build_from_checkpoint(payload: dict) -> torch.nn.Module:
    """Rebuild the architecture recorded in a loaded checkpoint and load its weights."""
    spec = payload.get("config", {}).get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        if payload.get("kind") == "module":  # prune_snr.save: the layer widths of a class it does not name
            raise CheckpointError(
                "this checkpoint was saved by prune_snr.save from a model of your own class, which it does not "
                "name: read it in Python with prune_snr.load(path, model=YourClass())"
            )
        raise CheckpointError("checkpoint has no config['model'] spec; it was not written by prune-snr train or prune")
    spec = dict(spec)
    if is_user_code(spec["name"]) and not trusted():
        raise CheckpointError(
            f"this checkpoint's architecture is code ({spec['name']}), which reading it does not import: pass "
            f"--trust-model-code (API: prune_snr.load(path, trust_model_code=True) or load(path, model=instance); "
            f"environment {TRUST_ENV}=1)"
        )
    spec.pop("user_model", None)
    input_shape = spec.pop("input_shape", None)
    classifier = spec.pop("classifier", None)
    model = build_model(spec.pop("name"), **spec)
    if input_shape:
        model.spec["input_shape"] = list(input_shape)
    if classifier:
        name_classifier(model, classifier)
    if payload.get("widths") is not None and not payload.get("pruning"):  # save()'d: reshape by the recorded widths
        return reshape_into(model, payload["widths"], payload["model"]).eval()
    history = payload.get("pruning")
    if history:
        import torch_pruning as tp

        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model))
        dg.load_pruning_history(history)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint weights do not fit the recorded architecture ({first}); the file is damaged or was edited"
        ) from exc
    return model.eval()


#: The attributes that say a layer's width (what structural pruning changes besides the tensors), per layer type.
WIDTHS = (
    (torch.nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (torch.nn.Linear, ("in_features", "out_features")),
    (torch.nn.modules.batchnorm._NormBase, ("num_features",)),
    (torch.nn.GroupNorm, ("num_groups", "num_channels")),
    (torch.nn.LayerNorm, ("normalized_shape",)),
)


def layer_widths(model: torch.nn.Module) -> dict[str, dict]:
    """Every layer's width attributes (:data:`WIDTHS`) as plain data: with the state_dict, what
    rebuilds a pruned model."""
    out = {}
    for name, module in model.named_modules():
        for kind, attrs in WIDTHS:
            if isinstance(module, kind):
                out[name] = {
                    a: list(v) if isinstance(v, tuple) else v for a, v in ((a, getattr(module, a)) for a in attrs)
                }
                break
    return out


def save(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save any model, pruned or not, as plain tensors and data: its weights and every layer's width.

    Reading it back never runs code (``torch.load(weights_only=True)``); :func:`load` with ``model=`` an unpruned
    instance of the same class reshapes that instance's layers and loads the weights, so the result is the
    user's own class again.

    Example:
        >>> import prune_snr, tempfile, os
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
        >>> _ = net(torch.zeros(1, 3, 5, 5))
        >>> slim = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.Linear(18, 2))
        >>> path = os.path.join(tempfile.mkdtemp(), "slim.pt")
        >>> _ = prune_snr.save(slim, path)
        >>> prune_snr.load(path, model=net)[0].out_channels
        2
    """
    spec = getattr(model, "spec", None)
    return save_checkpoint(
        path,
        {
            "kind": "module",
            "model": model.state_dict(),
            "widths": layer_widths(model),
            "config": {"model": dict(spec)} if spec else {},
        },
    )


def reshape_into(model: torch.nn.Module, widths: dict[str, dict], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Give ``model``'s layers the saved ``widths`` and tensors of ``state``'s shapes, then load
    ``state`` (in place)."""
    modules = dict(model.named_modules())
    missing = [name for name in widths if name not in modules]
    if missing:
        raise CheckpointError(
            f"the saved model has a layer {missing[0]!r} that {type(model).__name__} does not; pass an instance "
            "of the class that was saved"
        )
    for name, attrs in widths.items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue  # load_state_dict names it below
        if module._parameters.get(leaf) is not None and module._parameters[leaf].shape != tensor.shape:
            module._parameters[leaf] = torch.nn.Parameter(
                torch.empty_like(tensor), requires_grad=module._parameters[leaf].requires_grad
            )
        elif module._buffers.get(leaf) is not None and module._buffers[leaf].shape != tensor.shape:
            module._buffers[leaf] = torch.empty_like(tensor)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"the saved weights do not fit {type(model).__name__} ({first}); pass an instance of the class "
            "that was saved"
        ) from exc
    return model


def load(
    path: str | os.PathLike, *, model: torch.nn.Module | None = None, trust_model_code: bool = False
) -> torch.nn.Module:
    """Rebuild any model prune-snr saved (trained, pruned, or :func:`save`'d), on CPU, in eval mode.

    Without ``model`` the architecture is rebuilt by the name the file records (prune-snr's own and hub models; a
    ``MODULE:CALLABLE`` of the user's code only with ``trust_model_code=True``, since that imports the module).
    With ``model`` (an unpruned instance of the saved class, left unchanged) a copy of it is reshaped to the saved
    widths and takes the weights: the way back for a user's own architecture.

    Example:
        >>> import prune_snr
        >>> model = prune_snr.load("runs/fmnist/model.pt")  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 32, 32)).shape  # doctest: +SKIP
        torch.Size([1, 10])

    Raises:
        CheckpointError: see :func:`load_checkpoint`; weights that do not fit ``model``.
    """
    payload = load_checkpoint(path)
    if model is None:
        with trusting(trust_model_code):
            return build_from_checkpoint(payload)
    return into_instance(payload, model)


def into_instance(payload: dict, model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (an unpruned instance of the saved class) reshaped to ``payload``'s widths, with its
    weights, in eval mode."""
    import copy

    copied = copy.deepcopy(model).cpu()
    spec = payload.get("config", {}).get("model") or {}
    if spec.get("dropped"):  # residual blocks the run replaced by identity
        drop_blocks(copied, spec["dropped"])
    widths = payload.get("widths")
    if widths is None and payload.get("pruning"):  # a pruning run's file: replay its history on the instance
        import torch_pruning as tp

        if spec.get("input_shape"):
            remember_input_shape(copied, spec["input_shape"])
        tp.DependencyGraph().build_dependency(copied, example_inputs=example_input(copied)).load_pruning_history(
            payload["pruning"]
        )
        widths = {}
    return reshape_into(copied, widths or {}, payload["model"]).eval()
