"""Progress reporting handed in by the caller (the CLI passes a ``rich.progress.Progress``).

Core code never prints: it calls :func:`track`, which is a plain loop when no progress
display is given (library use, tests).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


class PlainProgress:
    """What the CLI hands in when stderr is no terminal (CI logs, ``| tee``): instead of a live
    bar, one plain line per finished task (an epoch, a feature pass, the heads, a search step)
    with its last description, its count and its time; a task that runs longer than ``interval``
    seconds also prints where it is every ``interval`` seconds, so a long epoch is not silent.

    Example:
        >>> with PlainProgress(print) as p:
        ...     for _ in track(p, range(3), "heads"):
        ...         pass  # doctest: +ELLIPSIS
        heads: 3/3 in ... s
    """

    def __init__(self, write: Callable[[str], None], interval: float = 60.0):
        self.write = write
        self.interval = interval
        self.task_ids: list[int] = []
        self._tasks: dict[int, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        task = len(self._tasks)
        self._tasks[task] = {
            "description": description,
            "total": total,
            "done": 0,
            "start": time.perf_counter(),
            "said": time.perf_counter(),
        }
        self.task_ids.append(task)
        return task

    def advance(self, task: int, advance: float = 1) -> None:
        t = self._tasks[task]
        t["done"] += advance
        now = time.perf_counter()
        if now - t["said"] >= self.interval:
            t["said"] = now
            self.write(f"{t['description']}: {self._count(t)} after {now - t['start']:.0f} s")

    @staticmethod
    def _count(t: dict) -> str:
        return f"{t['done']:g}/{t['total']:g}" if t["total"] else f"{t['done']:g}"

    def update(self, task: int, *, description: str | None = None, advance: float | None = None, **_) -> None:
        if description is not None:
            self._tasks[task]["description"] = description
        if advance:
            self.advance(task, advance)

    def remove_task(self, task: int) -> None:
        t = self._tasks.pop(task)
        self.task_ids.remove(task)
        self.write(f"{t['description']}: {self._count(t)} in {time.perf_counter() - t['start']:.1f} s")


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
