"""The one place that parses flags, prints tables and exits with codes.

Commands only resolve options (defaults -> --recipe -> flags) and call one library function.
A :class:`PruneSnrError` becomes one red line on stderr and exit code 2 (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import sys

from .base import OutFolder, app, console, err_console, progress_bar, torchrun, user_errors
from .exchange import export, import_
from .stages import measure, prune, train
from .study import pick_cmd, search
from .tables import points_table, prune_table

# Registered here, in one place, because --help and docs/cli.md list the commands in this order.
app.command()(train)
app.command("import")(import_)
app.command()(measure)
app.command()(prune)
app.command()(export)
app.command()(search)
app.command("pick")(pick_cmd)

__all__ = [
    "OutFolder",
    "app",
    "console",
    "err_console",
    "export",
    "import_",
    "main",
    "measure",
    "pick_cmd",
    "points_table",
    "progress_bar",
    "prune",
    "prune_table",
    "search",
    "torchrun",
    "train",
    "user_errors",
]


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
