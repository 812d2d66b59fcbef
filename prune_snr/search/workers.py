"""Several worker processes on one study: slot claims, dead workers, storage outages, ``--workers K``.

Any number of ``prune-snr search`` processes may run one study (a PostgreSQL/MySQL URL across
machines, a JournalStorage ``.log`` file on one machine); together they finish exactly
``--trials`` counted trials:

- **Slots.** Right after Optuna creates a trial, its worker counts the trials up to and including
  it (by number) that are counted or may still count (RUNNING, WAITING). Beyond ``--trials`` the
  trial is a surplus: user attribute ``surplus=True``, state PRUNED, never counted. A trial's count
  includes every earlier trial that can still count, so no two workers both take the last slot.
- **Dead workers.** On an RDB storage Optuna's heartbeat fails a trial whose worker stopped
  beating (``HEARTBEAT_INTERVAL``, ``GRACE_PERIOD``) and a retry of it is queued (WAITING);
  on any storage (JournalStorage has no heartbeat; a worker may die before its first) a RUNNING
  trial whose worker process (user attribute ``worker``: host, pid, start time) is gone from this
  host is failed and retried the same way. Such a failed trial has no ``error`` of its own and is
  not counted.
- **Outages.** A storage call that fails (the database restarts, the network drops) is retried with
  a one-line warning for up to ``RETRY_SECONDS``; finished trials are in the storage already. A
  heartbeat that fails is missed, not the end of the trial's heartbeats (:class:`RDBStorage`). A
  trial the outage left RUNNING in the worker that started it (its final state never written, and
  maybe no heartbeat ever recorded, which Optuna's check never fails; lost even inside
  ``study.ask``) is ended by that worker as soon as none of its trials runs. A lost trial that had
  ended on its own (an error of its own, a surplus) is not retried; a retry is nobody's trial until
  a worker takes it (no ``worker`` inherited).

``--workers K`` on one machine is :func:`prune_snr.search.parallel.run_workers`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages.journal import JournalStorage as _OptunaJournal
from optuna.trial import TrialState

from ..errors import StorageError

HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats (RDB storages)
GRACE_PERIOD = 30  # a RUNNING trial without a heartbeat for this long is failed, and retried
MAX_RETRY = 3  # retries of a trial whose worker died
RETRY_SECONDS = 180  # how long a worker retries an unreachable storage before it gives up
POLL_SECONDS = 2.0  # how often a worker waiting on the others' running trials looks again


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an RDB URL (a journal path)
        return url


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a storage that is (for now) unreachable."""
    import sqlalchemy.exc

    return (
        optuna.exceptions.StorageInternalError,
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        ConnectionError,
    )


_Retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


class RetryLost(_Retry):
    """Optuna's retry of a failed lost trial (``RetryHeartbeatStaleTrialCallback`` since Optuna 4.9, before it
    ``RetryFailedTrialCallback``), for one that had not ended on its own: one with an error of its own counts as
    failed, a surplus never counts, and a retry would inherit both.
    The retry does not inherit the lost trial's ``worker`` either: until its own worker names itself, the retry would
    read as a trial of that dead process, and be failed again."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if "error" in trial.user_attrs or trial.user_attrs.get("surplus"):
            return
        trial = copy.copy(trial)  # the caller's (maybe cached) trial keeps its user attributes
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "worker"}
        super().__call__(study, trial)


def retry_callback() -> RetryLost:
    return RetryLost(max_retry=MAX_RETRY)


class _Tracked:
    """A storage that keeps the ids of the trials this process set RUNNING (asked for, or popped from the queue):
    one still RUNNING while none of this worker's trials runs was lost to an outage (:func:`fail_orphans`), even
    before its objective started."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started: set[int] = set()

    def create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        self._created(trial_id, template_trial)
        return trial_id

    def _created(self, trial_id: int, template_trial: optuna.trial.FrozenTrial | None) -> None:
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self.started.add(trial_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:
            self.started.add(trial_id)
        return changed


class JournalStorage(_Tracked, _OptunaJournal):
    """Optuna's JournalStorage, keeping the trials this process started."""


class RDBStorage(_Tracked, optuna.storages.RDBStorage):
    """Optuna's RDBStorage, keeping the trials this process started, whose heartbeat thread outlives an outage: a
    failed heartbeat is missed and warned about in one line, where Optuna's thread would end with a traceback and
    leave the trial without heartbeats."""

    def _create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None):
        trial = super()._create_new_trial(study_id, template_trial)  # what Optuna's cache in front of it calls
        self._created(trial._trial_id, template_trial)
        return trial

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except storage_errors() as exc:
            cause = str(exc.__cause__ or exc).splitlines()[0] or type(exc).__name__
            warnings.warn(
                f"study storage {masked(self.url)} unreachable ({cause}); a heartbeat of trial id {trial_id} missed",
                UserWarning,
                stacklevel=1,
            )


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return "?"


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _alive(worker: str) -> bool | None:
    """Whether the worker process of ``WORKER_ID`` form still runs; None when it ran on another host."""
    host, pid, started = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # exited, not yet reaped by its parent
    return _start_time(int(pid)) == started


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail (and queue a retry of) the RUNNING trials whose worker is gone.

    RDB storages: Optuna's heartbeat check. Any storage: trials whose worker process of this host has exited
    (on an RDB storage one killed before its first heartbeat, which Optuna's check never fails).
    """
    if getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None:  # RDBStorage with heartbeats
        optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker is not None and _alive(worker) is False:
            _fail_lost(study, t._trial_id)


def fail_orphans(study: optuna.Study) -> None:
    """Fail (and queue a retry of) the trials this process started (on a storage of :func:`make_storage`) that are
    still RUNNING; forget them all.

    Call it only while none of this worker's trials runs: one still RUNNING then was left so by a storage
    outage, its final state never written, and with no heartbeat recorded Optuna's check would never fail it.
    """
    storage = study._storage
    if not isinstance(storage, _Tracked):  # Optuna's cache in front of an RDB storage
        storage = getattr(storage, "_backend", None)
    if not isinstance(storage, _Tracked):
        return  # a storage made elsewhere keeps no record of its trials
    running = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for trial_id in sorted(storage.started & running):
        _fail_lost(study, trial_id)
    storage.started.clear()


def _fail_lost(study: optuna.Study, trial_id: int) -> None:
    """Fail a trial no process runs any more, and queue its retry (:func:`retry_callback`)."""
    try:
        if study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            retry_callback()(study, study._storage.get_trial(trial_id))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # another worker failed it first (and queued the retry)


def counts(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts towards ``--trials``: completed, or failed with an error of its own."""
    return t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)


def may_count(t: optuna.trial.FrozenTrial) -> bool:
    """Counted, or RUNNING/WAITING and not a surplus: it holds a slot."""
    return counts(t) or (t.state in (TrialState.RUNNING, TrialState.WAITING) and not t.user_attrs.get("surplus"))


def claim_slot(study: optuna.Study, trial: optuna.Trial, trials: int) -> bool:
    """True when ``trial`` is within the first ``trials`` slots; else it is marked ``surplus``."""
    ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number <= trial.number and may_count(t))
    if ahead <= trials:
        return True
    trial.set_user_attr("surplus", True)
    return False


def _storage_error_in(exc: BaseException | None) -> BaseException | None:
    """The storage error in ``exc``'s chain, if any (Optuna's post-processing of a trial may raise
    another error while handling one: an UnboundLocalError when even reading the trial back fails)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, storage_errors()):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class Outage:
    """Bounded retry of storage calls: ``with outage: ...`` inside a loop; a failure warns in one line and sleeps."""

    def __init__(self, where: str) -> None:
        self.where, self.since, self.delay = where, None, 1.0

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None:
            self.since, self.delay = None, 1.0
            return False
        if issubclass(kind, optuna.exceptions.UpdateFinishedTrialError):
            warnings.warn(
                f"a trial of this worker was failed by another one meanwhile (no heartbeat during an outage?); "
                f"it is retried: {str(exc).splitlines()[0]}",
                UserWarning,
                stacklevel=2,
            )
            return True
        exc = _storage_error_in(exc)
        if exc is None:
            return False
        now = time.monotonic()
        self.since = self.since or now
        cause = str(exc.__cause__ or exc).splitlines()[0] if str(exc.__cause__ or exc) else type(exc).__name__
        if now - self.since > RETRY_SECONDS:
            raise StorageError(
                f"the study storage {self.where} has been unreachable for {RETRY_SECONDS} s ({cause}); check that "
                "the server runs and is reachable, then run the same command again: finished trials are kept"
            ) from exc
        warnings.warn(
            f"study storage {self.where} unreachable ({cause}); retrying in {self.delay:.0f} s",
            UserWarning,
            stacklevel=2,
        )
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 15.0)
        return True
