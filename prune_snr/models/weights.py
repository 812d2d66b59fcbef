"""Weights a user brings: a ``state_dict`` read from ``.safetensors`` or ``.pt``/``.pth``, never code.

A ``.pt`` file is read with ``torch.load(weights_only=True)``, so a file that pickles a whole
model object is refused (with the fix) instead of run. Common wrappings are undone: a dict that
nests the weights under ``state_dict`` or ``model`` (training-script checkpoints) and the
``module.`` prefix of ``DataParallel``/DDP.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/w.pt"
    >>> torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 3)}}, path)
    >>> list(read_state_dict(path))
    ['fc.weight']
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ModelError
from .adapters import classifier_name

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
WIDTH_OPTIONS = "vgg16's --width-mult, --input-size, --model-kwargs"
_NESTING_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "net")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped (see the module docstring).

    Raises:
        CheckpointError: missing file, unknown suffix, a pickled model object, or no tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--weights {path}: no such file")
    if path.suffix not in SUFFIXES:
        raise CheckpointError(
            f"--weights {path}: unknown format {path.suffix!r}; give a state_dict saved as {', '.join(SUFFIXES)}"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"--weights {path}: not a readable safetensors file ({exc})") from exc
    else:
        state = load_plain(
            path,
            name=f"--weights {path}",
            damaged="is corrupt or not a torch file ({why})",
            refused="holds a pickled object, not a state_dict (refused: loading it could run code); "
            "save it with torch.save(model.state_dict(), PATH) and pass that file",
        )
    return _unwrap(state, path)


def load_plain(path: Path, *, name: str, damaged: str, refused: str):
    """``torch.load(path, weights_only=True)`` with every failure one :class:`CheckpointError` starting with ``name``:
    ``damaged`` (its ``{why}`` filled in) for bytes that are no complete torch file, ``refused`` for a pickle of
    objects other than tensors and plain data; a Git LFS pointer says so."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{name} is a Git LFS pointer, not the file: fetch it (git lfs pull) and pass it again")
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):  # torch.save writes a zip, or a pickle (legacy)
        raise CheckpointError(f"{name} {damaged.format(why='not a torch file')}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # an object the weights-only unpickler refuses to build
            raise CheckpointError(f"{name} {refused}") from exc
        raise CheckpointError(f"{name} {damaged.format(why='not a pickle')}") from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, LookupError, TypeError) as exc:
        raise CheckpointError(f"{name} {damaged.format(why=type(exc).__name__)}") from exc


def _unwrap(state, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"state_dict": {...}}, {"model": {"state_dict": ...}}
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in _NESTING_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"--weights {path} holds no tensors at its top level or under {'/'.join(_NESTING_KEYS)}; "
            "save model.state_dict()"
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def classifier_keys(model: nn.Module) -> tuple[str, str]:
    """``(weight key, bias key)`` of the model's final classifier
    (:func:`prune_snr.models.adapters.classifier_name`)."""
    name = classifier_name(model)
    return f"{name}.weight", f"{name}.bias"


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str, reset_classifier: bool = False
) -> list[str]:
    """Load ``state`` into ``model`` strictly; with ``reset_classifier`` the classifier keeps its fresh
    initialisation whatever ``state`` holds for it. Returns the keys left at their initialisation.

    Raises:
        ModelError: the classifier's shape differs (names both shapes and ``--reset-classifier``), or
            other keys are missing, unexpected or of another shape (names the first of each).
    """
    own = model.state_dict()
    head = set(classifier_keys(model))
    if reset_classifier:
        state = {k: v for k, v in state.items() if k not in head}
    else:
        for k in sorted(head, key=lambda k: not k.endswith("weight")):  # the weight first: its shape names both sizes
            if k in state and k in own and state[k].ndim > 1 and state[k].shape[1] != own[k].shape[1]:
                raise ModelError(
                    f"{source}: the classifier {k} takes {state[k].shape[1]} input features but this model gives it "
                    f"{own[k].shape[1]}: build the architecture the weights were trained with ({WIDTH_OPTIONS})"
                )
            if k in state and k in own and state[k].shape != own[k].shape:
                raise ModelError(
                    f"{source}: the classifier {k} has shape {tuple(state[k].shape)} but the model was built with "
                    f"shape {tuple(own[k].shape)} (--num-classes {own[k].shape[0]}); pass --num-classes "
                    f"{state[k].shape[0]}, or --reset-classifier to start a new classifier"
                )
    missing = [k for k in own if k not in state and not (reset_classifier and k in head)]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ModelError(
            f"{source} does not fit this architecture: {', '.join(parts)} keys; check the architecture name "
            f"(e.g. vgg16 vs vgg16_bn) and its options ({WIDTH_OPTIONS})"
        )
    own.update(state)  # into the model's own state_dict: its per-module _metadata (versions, e.g. MNASNet's) stays
    model.load_state_dict(own)
    return sorted(head) if reset_classifier else []


def hub_state_dict(name: str, *, in_chans: int = 3) -> dict[str, torch.Tensor]:
    """The pretrained weights of ``timm:NAME`` or ``torchvision:NAME`` at the hub's own label count,
    from the library's cache when it holds them (offline), else downloaded.

    Raises:
        ModelError: not a hub model, or the weights are neither cached nor reachable (names where the
            file goes, and ``--weights`` as the alternative).
    """
    prefix, _, arch = name.partition(":")
    if prefix == "timm":
        import timm

        if not timm.is_model(arch):
            raise ModelError(f"timm has no model {arch!r}; see timm.list_models()")
        try:
            return timm.create_model(arch, pretrained=True, in_chans=in_chans).state_dict()
        except Exception as exc:  # the hub client raises many types (OSError, HTTP, offline-mode errors)
            cfg = timm.models.get_pretrained_cfg(arch)
            where = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or arch
            raise ModelError(
                f"--pretrained {name}: no cached weights and no network ({type(exc).__name__}); put {where}'s files "
                "in the Hugging Face cache (HF_HOME), or save the weights and pass --weights FILE"
            ) from exc
    if prefix == "torchvision":
        import torchvision

        if arch not in torchvision.models.list_models():
            raise ModelError(f"torchvision has no model {arch!r}; see torchvision.models.list_models()")
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        try:
            return torchvision.models.get_model(arch, weights=weights).state_dict()
        except Exception as exc:  # urllib raises URLError/OSError/HTTPError offline
            target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            raise ModelError(
                f"--pretrained {name}: no cached weights and no network ({type(exc).__name__}); put {weights.url} "
                f"at {target}, or save the weights and pass --weights FILE"
            ) from exc
    raise ModelError(
        f"--pretrained needs a hub model (timm:NAME or torchvision:NAME), not {name!r}; pass --weights FILE instead"
    )
