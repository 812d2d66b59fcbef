"""Recipes: defaults -> ``--recipe FILE`` (YAML) -> flags, built into one frozen config per stage.

A recipe is one flat YAML mapping that may hold the options of several stages; every (nested) config takes
the keys it knows. A key no stage knows, or a value of the wrong type, is a :class:`ConfigError` naming the
file and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .. import choices
from ..errors import ConfigError
from .fields import _CONFIGS, key_of


def _nested(hint) -> bool:
    return dataclasses.is_dataclass(hint)


def flat_keys(cls) -> set[str]:
    """The recipe keys / flag names a config (with its nested configs) understands."""
    hints = typing.get_type_hints(cls)
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        keys |= flat_keys(hints[f.name]) if _nested(hints[f.name]) else {key_of(f)}
    return keys


def flat_values(cfg) -> dict[str, Any]:
    """A config's values by flat key (``finetune_epochs`` for ``cfg.prune.finetune.epochs``), as :func:`flat_keys`
    names them."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out.update(flat_values(value) if dataclasses.is_dataclass(value) else {key_of(f): value})
    return out


def known_keys() -> set[str]:
    return set().union(*(flat_keys(cls) for cls in _CONFIGS)) | {"recipe"}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe, checking every key against the options of all commands."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist; see recipes/ for examples") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option: value, got a {type(data).__name__}")
    recipe = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(recipe) - known_keys())
    if unknown:
        raise ConfigError(f"recipe {path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known_keys()))}")
    return recipe


#: Text options that hold comma-separated items, which Python callers and recipes may give as a list.
COMMA_LISTS = frozenset({"points", "fix", "pick"})


def _coerce(name: str, value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(name, value, args[0], where)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(name, v, item, where) for v in value]
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if name in COMMA_LISTS and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return ",".join(value)
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name}={value!r} is not a valid {getattr(hint, '__name__', hint)}") from None
    return value


def resolve(cls, recipe: str | Path | None = None, overrides: dict[str, Any] | None = None, *, base=None):
    """Build ``cls`` from ``base`` (default: its defaults), then the recipe's keys, then non-``None`` overrides.

    Keys are flat (``finetune_lr``, ``threshold``): each reaches every nested config that has it.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - flat_keys(cls))
    if unknown:
        raise ConfigError(f"option {unknown[0]!r} does not apply to this command")
    values = load_recipe(recipe) if recipe else {}
    sources = [(values, f"recipe {recipe}"), (overrides, "options")]
    preset = overrides.get("preset", values.get("preset", getattr(base, "preset", None)))
    if preset is not None:  # a preset's options come before the recipe's and the flags, which win
        choices.PRESET_CHOICES.check(preset)
        taken = choices.PRESETS[preset]
        if base is not None:  # a base config's own choices win too: the preset fills what it leaves at the default
            defaults = {f.name: f.default for f in dataclasses.fields(base)}
            taken = {k: v for k, v in taken.items() if getattr(base, k, None) == defaults.get(k)}
        sources.insert(0, (taken, f"preset {preset}"))
    return _build(cls, base, sources)


def _build(cls, base, sources: list[tuple[dict, str]]):
    hints = typing.get_type_hints(cls)
    changes: dict[str, Any] = {}
    own = {key_of(f) for f in dataclasses.fields(cls) if f.metadata.get("own")}  # keys nested configs skip
    inner = [({k: v for k, v in values.items() if k not in own}, where) for values, where in sources]
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _nested(hint):
            changes[f.name] = _build(hint, getattr(base, f.name) if base is not None else None, inner)
            continue
        name = key_of(f)
        for values, where in sources:
            if name in values:
                changes[f.name] = _coerce(name, values[name], hint, where)
    cfg = dataclasses.replace(base, **changes) if base is not None else cls(**changes)
    cfg.validate()
    return cfg


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
