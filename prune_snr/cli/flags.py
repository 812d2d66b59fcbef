"""Typer options made from the config fields, so that each option is declared once
(``config/training.py``, ``measuring.py``, ``pruning.py``).

``@takes(MeasureConfig)`` gives a command every option of the config as a flag: its spelling, help, choices
and shown default come from the field's :func:`prune_snr.config.option`; the command receives the flags
given as ``options`` (config key -> value), ready for :func:`prune_snr.config.resolve`. The command's own
parameters (arguments, ``--out``, ``--resume``) stay in its signature.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Optional

import typer

from ..config import flag_of, key_of
from ..models.user_code import TRUST_ENV

Recipe = Annotated[Optional[Path], typer.Option("--recipe", help="YAML recipe; flags given here override its keys.")]
TrustModelCode = Annotated[
    bool,
    typer.Option(
        "--trust-model-code",
        help="Let a checkpoint of a MODULE:CALLABLE architecture import its module (that runs its code).",
    ),
]
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def apply_trust(trust_model_code: bool) -> None:
    """``--trust-model-code`` is no option of a stage: it holds for the whole process and the worker processes it
    starts, so it goes to the environment."""
    if trust_model_code:
        os.environ[TRUST_ENV] = "1"


def flag_fields(
    cls, *, only: Iterable[str] | None = None, nested: Iterable[str] = (), include: Iterable[str] = ()
) -> list:
    """``(field, type hint)`` of every flag of ``cls``: its own fields (those named in ``only``, if given), every field
    of the ``nested`` configs, and the fields named in ``include`` of any nested config; a key appears once."""
    hints, out = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            wanted = None if f.name in nested else set(include)
            out += [
                (g, h)
                for g, h in flag_fields(hint, only=wanted, include=include)
                if wanted is None or key_of(g) in wanted
            ]
        elif f.metadata.get("cli", True) and (only is None or key_of(f) in only):
            out.append((f, hint))
    seen: set[str] = set()
    return [(f, h) for f, h in out if not (key_of(f) in seen or seen.add(key_of(f)))]


def parameter(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    """The typer parameter of one config field (a keyword named by its flat key)."""
    meta, base = f.metadata, _cli_type(hint)
    if meta.get("argument"):
        return inspect.Parameter(
            key_of(f),
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[base, typer.Argument(help=meta.get("help") or None)],
        )
    flag = flag_of(f)
    if base is bool and not meta.get("flag"):
        flag = f"{flag}/--no-{flag.removeprefix('--')}"
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    shown = False if meta.get("hidden_default") or default is None or meta.get("required") else str(default)
    info = typer.Option(flag, help=meta.get("help") or None, show_default=shown)
    if meta.get("required"):
        return inspect.Parameter(key_of(f), _KEYWORD, annotation=Annotated[base, info], default=...)
    return inspect.Parameter(key_of(f), _KEYWORD, annotation=Annotated[Optional[base], info], default=None)


def _cli_type(hint: Any) -> type:
    """What typer parses a flag as: the field's type without ``Optional``; a list (a label sweep)
    as text, ``3,5,10``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return str if typing.get_origin(hint) is list else hint


def takes(
    cls,
    *,
    only: Iterable[str] | None = None,
    nested: Iterable[str] = (),
    include: Iterable[str] = (),
    recipe: bool = True,
    trust: bool = False,
) -> Callable:
    """Decorator: the command takes the flags of ``cls`` (:func:`flag_fields`), ``--recipe`` (unless ``recipe=False``)
    and, with ``trust``, ``--trust-model-code`` (applied here, :func:`apply_trust`); it is called with the flags given
    as ``options`` beside ``recipe``."""
    generated = [parameter(f, hint) for f, hint in flag_fields(cls, only=only, nested=nested, include=include)]
    keys = [p.name for p in generated]
    extra = ([inspect.Parameter("recipe", _KEYWORD, annotation=Recipe, default=None)] if recipe else []) + (
        [inspect.Parameter("trust_model_code", _KEYWORD, annotation=TrustModelCode, default=False)] if trust else []
    )

    def wrap(func: Callable) -> Callable:
        own = [
            p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name not in ("options", "recipe")
        ]
        params = own + generated + extra
        arguments = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]

        @functools.wraps(func)
        def command(**given):
            apply_trust(given.pop("trust_model_code", False))
            options = {k: str(v) if isinstance(v, Path) else v for k in keys if (v := given.pop(k, None)) is not None}
            return func(**given, options=options)

        command.__signature__ = inspect.Signature(
            arguments + [p.replace(kind=_KEYWORD) for p in params if p not in arguments]
        )
        command.__annotations__ = {}
        return command

    return wrap
