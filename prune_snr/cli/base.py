"""The typer app and what every command runs inside: the consoles, the progress bar, torchrun's process group
and the one-line errors and warnings."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..config.spelling import command_line
from ..errors import PruneSnrError
from ..runtime import DIST_TIMEOUT, distributed, is_main

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure per-filter label clusters and SNR in a trained CNN, then prune it with that measurement.",
)
# Not a terminal (CI logs, `| tee`): wide tables instead of rich's 80-column squeeze.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state = {"debug": False}
_show_python_warning = warnings.showwarning

# The command's own options (config options come from the config fields, flags.py).
OutFolder = Annotated[Path, typer.Option("--out", help="Output folder (required; a recipe's out is the training run).")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    dist_timeout: Annotated[
        float,
        typer.Option(
            "--dist-timeout",
            help="Under torchrun: seconds a rank waits for the others (rank 0 "
            "alone trains the heads and joins the feature cache meanwhile) before the job stops.",
        ),
    ] = DIST_TIMEOUT,
) -> None:
    _state["debug"] = debug
    _state["dist_timeout"] = dist_timeout
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """prune-snr's own warnings as one yellow line (where and why); others as Python prints them."""
    if not str(filename).startswith(str(Path(__file__).parent.parent)) and category is not UserWarning:
        return _show_python_warning(message, category, filename, lineno, file, line)
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def progress_bar():
    """A live rich bar on a terminal; elsewhere one plain line per finished epoch or phase."""
    if not err_console.is_terminal:
        from ..progress import PlainProgress

        return PlainProgress(lambda line: err_console.print(line, highlight=False, markup=False) if is_main() else None)
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not is_main(),
    )


@contextlib.contextmanager
def torchrun(device: str | None):
    """Join torchrun's process group for the command; only rank 0 prints tables."""
    with distributed(device or "auto", timeout=_state.get("dist_timeout", DIST_TIMEOUT)):
        console.quiet = not is_main()
        yield


@contextlib.contextmanager
def user_errors():
    """Turn the project's errors into one line and exit code 2 (the line names options by their flags)."""
    try:
        with command_line():
            yield
    except PruneSnrError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; the last finished epoch/step is saved, re-run with --resume")
        raise typer.Exit(130) from None
