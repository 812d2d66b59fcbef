"""A message in its caller's spelling: the command line reads ``--round-to 1``, Python ``round_to=1``.

Each message is written once, naming options by their flags; the Python entry points (``measure``, ``prune``,
``search``, ``export``) are wrapped in :func:`keyword_spelling`, which rewrites the flags an error names to the
keywords a Python caller gives, unless the command line called them.

Example:
    >>> in_keywords("--width-mult 5: use a value in (0, 4]")
    'width_mult=5: use a value in (0, 4]'
    >>> in_keywords("--remeasure needs --iterative-steps 2 or more; --closest-target warns instead")
    'remeasure=True needs iterative_steps=2 or more; exact_target=False warns instead'
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import re
import typing
import warnings
from pathlib import Path

from .. import choices
from ..errors import PruneSnrError
from .fields import _CONFIGS, flag_of, key_of

_PACKAGE = str(Path(__file__).resolve().parents[1])

#: True while the command line runs: its messages keep the flags it was given.
COMMAND_LINE = contextvars.ContextVar("prune_snr_command_line", default=False)

# a flag, then what may be its value: a number, a quoted text, or a word (a choice's name, or one before a colon)
_FLAG = re.compile(r"(--[a-z][a-z0-9-]*)(?: ([-+]?\d[^\s:;,)]*|'[^']*'|[a-z][\w.+-]*))?")


@functools.cache
def _keywords() -> dict[str, tuple[str, bool | None]]:
    """Each flag -> (its keyword, the value a bare boolean flag sets, or None for an option that takes a value)."""
    table: dict[str, tuple[str, bool | None]] = {"--resume": ("resume", True)}  # prune's own keyword
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
    return frozenset(name for table in vars(choices).values() if isinstance(table, choices.Choices) for name in table)


def in_keywords(message: str) -> str:
    """``message`` with every option flag it names spelled as the keyword a Python caller passes."""

    def swap(m: re.Match) -> str:
        flag, word = m.group(1), m.group(2)
        if flag not in _keywords():
            return m.group(0)
        key, sets = _keywords()[flag]
        rest = f" {word}" if word else ""
        if sets is not None:
            return f"{key}={sets}{rest}"
        if word and (not word[0].isalpha() or word in _choice_names() or m.string.startswith(":", m.end())):
            return f"{key}={word}"
        return key if not word and m.string.startswith(":", m.end()) else f"{key}={rest}"

    return _FLAG.sub(swap, message)


def keyword_spelling(fn):
    """Wrap a Python entry point: the errors it raises and the package's warnings it shows name options as keywords
    (not when the command line called it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if COMMAND_LINE.get():
            return fn(*args, **kwargs)
        try:
            with warnings.catch_warnings():  # puts showwarning back, however the call ends
                warnings.showwarning = _showing_keywords(warnings.showwarning)
                return fn(*args, **kwargs)
        except PruneSnrError as exc:
            if exc.args and isinstance(exc.args[0], str):
                exc.args = (in_keywords(exc.args[0]), *exc.args[1:])
            raise

    return wrapper


def _showing_keywords(show):
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(_PACKAGE):  # another library's warning is shown as it was written
            message = category(in_keywords(str(message)))
        show(message, category, filename, lineno, file, line)

    return showwarning
