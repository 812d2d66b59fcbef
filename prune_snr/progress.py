"""Progress reporting handed in by the caller (the CLI passes a ``rich.progress.Progress``).

Core code never prints: it calls :func:`track`, which is a plain loop when no progress
display is given (library use, tests).
"""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(progress, iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if progress is None:
        yield from iterable
        return
    task = progress.add_task(description, total=total if total is not None else len(iterable))  # type: ignore[arg-type]
    try:
        for item in iterable:
            yield item
            progress.advance(task)
    finally:
        progress.remove_task(task)


def describe(progress, text: str) -> None:
    """Update the description of the most recent task (e.g. running loss)."""
    if progress is not None and progress.task_ids:
        progress.update(progress.task_ids[-1], description=text)
