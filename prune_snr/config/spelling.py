"""A message in its caller's spelling: the command line reads ``--round-to 1``, Python ``round_to=1``.

Each message is written once, naming options by their flags. Every :class:`prune_snr.errors.PruneSnrError` and
every warning the package gives (:func:`warn`) is spelled by :func:`spelled`: as written while the command line
runs (:func:`command_line`, for the whole process and the search workers it starts), else with the flags it names
rewritten to the keywords a Python caller passes (:func:`in_keywords`).

Example:
    >>> in_keywords("--width-mult 5: use a value in (0, 4]")
    'width_mult=5: use a value in (0, 4]'
    >>> in_keywords("--remeasure needs --iterative-steps 2 or more; --closest-target warns instead")
    'remeasure=True needs iterative_steps=2 or more; exact_target=False warns instead'
    >>> in_keywords("--metric params or macs; run prune-snr measure --out DIR first")
    "metric='params' or macs; run prune-snr measure --out DIR first"
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import typing
import warnings

from .. import choices, errors
from .fields import _CONFIGS, flag_of, key_of

# one switch for the process, not a context variable: a search's trials run on threads of their own
_state = {"command_line": False}

# a flag not inside a word, then what may be its value (the next token, up to a second flag: "--a x/--b y"; a
# bracketed note is no value)
_FLAG = re.compile(r"(?<![\w.-])(--[a-z][a-z0-9-]*)(?: ((?:(?!/--)[^\s:;,()])+))?")
# a command line quoted in a message keeps its flags
_COMMAND = re.compile(r"(prune-snr [^;()]*)")


@contextlib.contextmanager
def command_line(on: bool = True):
    """Within the block, messages keep the flags they name (the command line, or a worker it started)."""
    before = _state["command_line"]
    _state["command_line"] = on
    try:
        yield
    finally:
        _state["command_line"] = before


def is_command_line() -> bool:
    return _state["command_line"]


def spelled(message: str) -> str:
    """``message`` in its caller's spelling."""
    return message if _state["command_line"] else in_keywords(message)


def warn(message: str, category: type[Warning] = UserWarning, *, stacklevel: int = 1) -> None:
    """``warnings.warn`` of a message in its caller's spelling (``stacklevel`` as ``warnings.warn`` counts it)."""
    warnings.warn(spelled(message), category, stacklevel=stacklevel + 1)


@functools.cache
def _keywords() -> dict[str, tuple[str, bool | None]]:
    """Each flag -> (its keyword, the value a bare boolean flag sets, or None for an option that takes a value)."""
    # besides the configs: flags whose options are a function's keywords (export_checkpoint's)
    table: dict[str, tuple[str, bool | None]] = {
        "--resume": ("resume", True),
        "--batch": ("batch", None),
        "--baseline": ("baseline", None),
        "--int8": ("int8", True),
        "--calibration-size": ("calibration_size", None),
    }
    for cls in _CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True) or dataclasses.is_dataclass(hints[f.name]):
                continue
            key, flags = key_of(f), flag_of(f).split("/")
            if hints[f.name] is bool:
                table[flags[0]] = (key, True)
                table[flags[1] if len(flags) > 1 else "--no-" + flags[0][2:]] = (key, False)
            else:
                table.setdefault(flags[0], (key, None))
    return table


@functools.cache
def _choice_names() -> frozenset[str]:
    """The words that are an option's value after a flag: every choice, and the free-text options' usual words."""
    named = {name for table in vars(choices).values() if isinstance(table, choices.Choices) for name in table}
    return frozenset(named | {"cpu", "auto", "all", "dynamic"})


def _swap(m: re.Match) -> str:
    flag, token = m.group(1), m.group(2)
    if flag not in _keywords():
        return m.group(0)
    key, sets = _keywords()[flag]
    rest = f" {token}" if token else ""
    if sets is not None:
        return f"{key}={sets}{rest}"
    if token and token in _choice_names():
        return f"{key}={token!r}"
    # a value: a number, a quoted text, a path, a pattern, a placeholder (N) or a word before a colon ("--pick a:")
    if token and (
        not token[0].isalpha() or not token.isidentifier() or token.isupper() or m.string.startswith(":", m.end())
    ):
        return f"{key}={token}"
    return f"{key}{rest}"  # prose follows: "split_seed draws ..."


def in_keywords(message: str) -> str:
    """``message`` with every option flag it names spelled as the keyword a Python caller passes (a command line it
    quotes, ``prune-snr measure --out DIR``, stays as it is)."""
    parts = _COMMAND.split(message)  # odd parts are quoted command lines
    return "".join(part if i % 2 else _FLAG.sub(_swap, part) for i, part in enumerate(parts))


errors.spell_with(spelled)
