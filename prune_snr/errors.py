"""User-facing errors.

Every problem a user can fix (a missing file, a bad name, a bad value) is raised as a
subclass of :class:`PruneSnrError` with a one-line message that says what is wrong, where,
and what to do. The CLI (and :func:`run_script` for the benchmark scripts) prints that line and
exits with code 2; nothing else in the package prints or exits.
"""

import re
import sys


class PruneSnrError(Exception):
    """Root of every error the user can act on.

    Its message is written naming options by their command-line flags (``--round-to 1``); it is stored in its
    caller's spelling (``round_to=1`` from Python), which ``prune_snr.config.spelling`` decides.
    """

    def __init__(self, *args):
        if args and isinstance(args[0], str):
            try:
                args = (_spelling[0](args[0]), *args[1:])
            except Exception:  # a message as written beats none
                pass
        super().__init__(*args)


# the rewrite of a message into its caller's spelling: installed by prune_snr.config.spelling (errors imports
# nothing of the package); the identity until then
_spelling = [lambda message: message]


def spell_with(rewrite) -> None:
    """Make ``rewrite(message)`` the spelling of every :class:`PruneSnrError` made from now on."""
    _spelling[0] = rewrite


class ConfigError(PruneSnrError):
    """A recipe or option has an unknown key or an invalid value."""


class DataError(PruneSnrError):
    """A dataset is unknown, missing, empty or unusable."""


class ModelError(PruneSnrError):
    """A model name is unknown or the model does not fit the data."""


class CheckpointError(PruneSnrError):
    """A checkpoint is missing, corrupt, truncated or not written by prune-snr."""


class StorageError(PruneSnrError):
    """A study's storage cannot be reached or used (database down, wrong password, unreachable host)."""


class TrainingError(PruneSnrError):
    """Training diverged (NaN/inf loss) or cannot continue."""


class ExportError(PruneSnrError):
    """The exported model is invalid or disagrees with PyTorch."""


def cause(exc: BaseException) -> str:
    """The first line of the innermost cause of ``exc``, as ``Type: message`` (torch.export wraps the real error in
    a generic, coloured one)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()[:200] if lines else ''}"


def run_script(main) -> int:
    """Run a benchmark script's ``main``: a :class:`PruneSnrError` becomes one line on stderr and exit code 2.

    >>> if __name__ == "__main__":  # doctest: +SKIP
    ...     sys.exit(run_script(main))
    """
    try:
        return main()
    except PruneSnrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
