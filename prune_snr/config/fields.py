"""One declaration per option: a config field carries its flag, help, choices and default.

:func:`option` makes a dataclass field whose metadata the rest of the tool reads: the command line
(``prune_snr.cli.flags`` builds every typer option from it, so ``docs/cli.md`` follows), the options a
pruning report shows (``report``), the options a measurement records (``recorded``) and the options a
resumed training must keep (``result``). Adding an option is one field plus the code that uses it.

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Demo:
    ...     threshold: float = option(0.3, "θ for clusters and noise.")
    >>> spec = dataclasses.fields(Demo)[0].metadata
    >>> spec["help"], flag_of(dataclasses.fields(Demo)[0])
    ('θ for clusters and noise.', '--threshold')
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from ..errors import ConfigError

_CONFIGS: list[type] = []

#: ``report=`` values: always shown, shown when not None, shown when truthy
ALWAYS, GIVEN, ON = "always", "given", "on"


def config(cls):
    """Declare a frozen options dataclass whose keys recipes may use."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    _CONFIGS.append(cls)
    return cls


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable | None = None,
    flag: str | None = None,
    choices=None,
    note: str = "",
    key: str | None = None,
    own: bool = False,
    cli: bool = True,
    argument: bool = False,
    required: bool = False,
    hidden_default: bool = False,
    result: bool = False,
    recorded: bool = True,
    report: str | Callable | None = None,
) -> Any:
    """A config field and everything the tool says and checks about it.

    Args:
        default / factory: the value when neither a recipe nor a flag gives one.
        help: the flag's help; with ``choices`` (a :class:`prune_snr.choices.Choices`) its rows and default follow it,
            then ``note``.
        flag: the command-line spelling (default ``--`` + the key with dashes; ``--x/--no-x`` for a bool).
        key: the flat recipe key / flag name of a nested config's field (``finetune_lr``).
        own: a key the nested configs do not take (a search's ``workers`` are not its trials' loader workers).
        cli: False for a value the tool sets itself (no flag).
        argument / required: a positional argument / a required option on the command line.
        hidden_default: the default is described in ``help`` (it is derived), not printed.
        result: a resumed training must keep it (it changes the result).
        recorded: a measurement records it in ``measurement.json``'s options.
        report: when a pruning report shows it: ``ALWAYS``, ``GIVEN`` (not None), ``ON`` (truthy) or ``f(cfg) -> bool``.
    """
    text = " ".join(t for t in (choices.help(help) if choices is not None else help, note) if t)
    spec = {
        "help": text,
        "flag": flag,
        "key": key,
        "own": own,
        "cli": cli,
        "argument": argument,
        "required": required,
        "hidden_default": hidden_default,
        "result": result,
        "recorded": recorded,
        "report": report,
    }
    spec = {k: v for k, v in spec.items() if v not in (None, False) or k in ("cli", "recorded")}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=spec)
    return dataclasses.field(default=default, metadata=spec)


def key_of(f: dataclasses.Field) -> str:
    """The flat recipe key of a field (``finetune_lr`` for FineTuneConfig.lr)."""
    return f.metadata.get("key", f.name)


def flag_of(f: dataclasses.Field) -> str:
    """The field's command-line spelling."""
    return f.metadata.get("flag") or "--" + key_of(f).replace("_", "-")


def shown_in_report(f: dataclasses.Field, value: Any, cfg) -> bool:
    """Whether a pruning report's options part shows the field (its ``report`` rule)."""
    rule = f.metadata.get("report")
    if rule is None:
        return False
    if callable(rule):
        return bool(rule(cfg))
    return {ALWAYS: True, GIVEN: value is not None, ON: bool(value)}[rule]


def _flag(cfg, name: str) -> str:
    return flag_of(next(f for f in dataclasses.fields(cfg) if f.name == name)).split("/")[0]


def check_positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{_flag(cfg, name)} {value}: must be a positive number")


def check_fraction(cfg, name: str, *, allow_zero: bool) -> None:
    value = getattr(cfg, name)
    low_ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low_ok and value < 1):
        raise ConfigError(
            f"{_flag(cfg, name)} {value}: use a fraction in {'[0' if allow_zero else '(0'}, 1) "
            "(0.1 = 10 % of the training split)"
        )


def check_workers(cfg) -> None:
    if cfg.workers is not None and not (isinstance(cfg.workers, int) and cfg.workers >= 0):
        raise ConfigError(f"--workers {cfg.workers}: use 0 (load in the main process) or more")


def check_device(cfg) -> None:
    if not (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")):
        raise ConfigError(f"--device {cfg.device!r}: use auto, cpu or cuda[:N]")


def as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
