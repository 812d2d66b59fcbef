"""``--workers K``: K local processes run one study on a JournalStorage file, the measurement made once for all.

Example:
    >>> run_workers("runs/fm/model.pt", cfg, out="runs/fm/search", workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
from pathlib import Path

import optuna

from ..config.spelling import command_line, is_command_line
from ..errors import PruneSnrError
from .study import make_storage, prepare, run_search
from .trials import counted_trials
from .workers import POLL_SECONDS


def _worker_main(checkpoint: str, cfg, out: str, index: int, flags: bool) -> None:
    """One ``--workers`` process: run the study with its own sampler stream; an error is one line and exit 2 (its
    messages spelled as its starter's: ``flags`` for the command line)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        with command_line(flags):
            run_search(checkpoint, cfg, out=out, worker=index)
    except PruneSnrError as exc:
        print(f"error: worker {index}: {exc}", file=sys.stderr)
        sys.exit(2)


def run_workers(checkpoint: str | Path, cfg, *, out: str | Path, workers: int, progress=None) -> optuna.Study:
    """Run the study ``cfg`` with ``workers`` local processes on one JournalStorage file; return it.

    The checkpoint is measured once here (when the space needs it) and every worker reuses that
    measurement (``OUT/measurement``). The storage is ``cfg.storage``, else ``OUT/study.log``.
    Each worker process uses one thread (``OMP_NUM_THREADS=1`` unless set), so K workers use K cores.
    """
    out = Path(out)
    cfg = dataclasses.replace(cfg, storage=cfg.storage or str(out / "study.log"))
    make_storage(cfg.storage, out)  # a bad URL: one line now, not K times
    measurement = prepare(checkpoint, cfg, progress=progress)[3]
    if measurement is not None and not cfg.prune.measurement:
        measurement.save(out / "measurement")
        cfg = dataclasses.replace(cfg, prune=dataclasses.replace(cfg.prune, measurement=str(out / "measurement")))
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(str(checkpoint), cfg, str(out), i, is_command_line()),
            name=f"prune-snr-worker-{i}",
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    task = progress.add_task(f"search ({workers} workers)", total=cfg.trials) if progress is not None else None
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(POLL_SECONDS)
            if task is not None:
                with contextlib.suppress(Exception):  # the bar only
                    study = optuna.load_study(study_name=cfg.study_name, storage=make_storage(cfg.storage, out))
                    progress.update(task, completed=len(counted_trials(study)))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
        if task is not None:
            progress.remove_task(task)
    study = optuna.load_study(study_name=cfg.study_name, storage=make_storage(cfg.storage, out))
    failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if len(counted_trials(study)) < cfg.trials:
        raise PruneSnrError(
            f"workers {failed} stopped with an error (see above) and the study holds {len(counted_trials(study))} of "
            f"{cfg.trials} trials; fix the cause and run the same command again"
        )
    return study
