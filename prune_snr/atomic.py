"""Atomic artifact writers, shared by every stage: a crash leaves the old file or the new one, never half of one.

Example:
    >>> atomic_save_json(Path(tempfile.mkdtemp()) / "report.json", {"accuracy": 0.9}).name
    'report.json'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import PruneSnrError
from .runtime import is_main

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write, all_ranks: bool = False) -> Path:
    """Write through a temp file in the same folder, fsync, then ``os.replace``.

    The target is never deleted first, so a crash leaves either the old file or the new one.
    In a torchrun job only rank 0 writes (every rank holds the same result) unless ``all_ranks``
    (caches each rank needs at once; concurrent replaces of identical files are safe).
    """
    path = Path(path)
    if not (all_ranks or is_main()):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise PruneSnrError(
                f"could not write {path}: {exc.strerror or exc}; free disk space or choose another --out"
            ) from exc
        raise
    return path


def atomic_save_bytes(path: str | os.PathLike, data: bytes, *, all_ranks: bool = False) -> Path:
    return _atomic_write(Path(path), lambda f: f.write(data), all_ranks)


def atomic_save_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_save_bytes(path, text.encode())


def atomic_save_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_save_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy ``source`` to ``path`` through a synced temp file: ``path`` is the old file or the whole new one."""
    import shutil

    with open(source, "rb") as src:
        return _atomic_write(Path(path), lambda f: shutil.copyfileobj(src, f))
