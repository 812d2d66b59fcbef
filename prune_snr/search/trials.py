"""A study's trials: each one a prune of the base options with the drawn ones, recorded in the study; the loop that
fills the study beside other workers; the full re-evaluation of the Pareto trials of a proxy study."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from pathlib import Path

import optuna
from torch import nn

from ..checkpoint import build_from_checkpoint
from ..choices import THRESHOLD
from ..config import PruneConfig, SearchConfig
from ..errors import ConfigError, PruneSnrError
from ..measure import Measurement
from ..prune import prune
from .space import suggest
from .workers import (
    POLL_SECONDS,
    WORKER_ID,
    Outage,
    claim_slot,
    counts,
    fail_dead_trials,
    fail_orphans,
    masked,
    may_count,
    storage_errors,
)

#: BatchNorm recalibration batches of a ``proxy="bn"`` trial when ``bn_recalibrate`` is 0 (EagleEye's 50)
BN_PROXY_BATCHES = 50


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count towards ``--trials``: completed ones, and ones that failed with an error.

    A trial left RUNNING by a killed process (or failed later by Optuna's heartbeat check, with no
    error of its own) does not count, nor does a surplus trial of concurrent workers, so a study
    ends with exactly the requested number whatever the moment of a kill or the number of workers.
    """
    return [t for t in study.get_trials(deepcopy=False) if counts(t)]


def with_threshold(measurement: Measurement, threshold: float) -> Measurement:
    """The same field matrices read at another θ (fields do not depend on θ; SNR does).

    The statistics stored at the measurement's own θ are dropped, so every point's SNR is recomputed
    from its field matrices at ``threshold`` (a point that kept only some filters' fields is refused then).
    """
    if threshold == measurement.threshold:
        return measurement
    if not rethresholdable(measurement):
        raise ConfigError(
            f"θ = {threshold}: the measurement keeps only some filters' field matrices, so its SNR holds at its own "
            f"θ = {measurement.threshold} only; measure with --save-fields all"
        )
    meta = {**measurement.meta, "options": {**measurement.meta["options"], "threshold": threshold}}
    return dataclasses.replace(measurement, meta=meta, filter_stats={})


def rethresholdable(measurement: Measurement) -> bool:
    """Whether every point keeps every filter's field matrix: what reading the measurement at another θ needs."""
    return all(measurement.keeps_every_matrix(n) for n in measurement.fields)


@dataclasses.dataclass
class Trials:
    """What every trial of one study shares: the options it starts from, the model, its measurement and data."""

    cfg: SearchConfig
    base_cfg: PruneConfig
    model: nn.Module
    payload: dict | None  # the checkpoint's, or None for the user's model object
    measurement: Measurement | None
    data: dict
    out: Path
    fixed: dict
    parameters: dict
    source: str

    @property
    def fraction(self) -> float:
        return float(self.cfg.proxy) if self.cfg.proxy not in (None, "bn") else 1.0

    @property
    def proxied(self) -> bool:
        return self.cfg.proxy == "bn" or self.fraction < 1

    def run(self, number: int, opts: dict, folder: Path, full: bool) -> dict:
        """Prune with ``opts`` (a proxy trial's fine-tuning unless ``full``) into ``folder``; its report."""
        opts = {**opts, "finetune_fraction": 1.0 if full else self.fraction}
        if self.cfg.proxy == "bn" and not full:
            opts.update(finetune_epochs=0, bn_recalibrate=self.base_cfg.bn_recalibrate or BN_PROXY_BATCHES)
        if "truncate_layers" in opts:  # a study from before PruneConfig named it so
            opts["truncate"] = opts.pop("truncate_layers")
        measurement = self.measurement
        theta = opts.get("threshold", measurement.threshold if measurement is not None else THRESHOLD)
        trial_model = (
            self.model if self.payload is None else build_from_checkpoint(self.payload)
        )  # prune works on a copy either way
        measured = with_threshold(measurement, theta) if measurement is not None else None
        _, report = prune(
            trial_model,
            cfg=self.base_cfg,
            measurement=measured,
            seed=self.cfg.prune.seed + number,
            out=folder,
            config={"source": self.source, "trial": number},
            **self.data,
            **opts,
        )
        return report

    def objective(self, study: optuna.Study, trial: optuna.Trial) -> tuple[float, float]:
        """Draw, prune, record: ``(validation accuracy, kept fraction of the metric)``; NaN where it is not finite."""
        trial.set_user_attr("worker", WORKER_ID)
        if not claim_slot(study, trial, self.cfg.trials):
            raise optuna.TrialPruned("surplus: the other workers' trials fill the study")
        opts = {
            name: suggest(trial, name, self.fixed, self.cfg.max_finetune_epochs, self.parameters)
            for name in self.parameters
        }
        folder = (self.out / "trials" / f"{trial.number:04d}").resolve()
        trial.set_user_attr("artifacts", str(folder))
        trial.set_user_attr("options", opts)
        try:
            report = self.run(trial.number, opts, folder, full=not self.proxied)
        except Exception as exc:
            trial.set_user_attr("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise
        return _record(trial, report, self.cfg.prune.metric, self.base_cfg.latency_batch)


def _record(trial: optuna.Trial, report: dict, metric: str, latency_batch: int) -> tuple[float, float]:
    accuracy = report["after"]["val_accuracy"]
    if metric == "latency":
        kept = report["latency"][f"batch_{latency_batch}"]["fraction"]
    else:
        kept = report["after"][metric] / report["before"][metric]
    for key in ("accuracy", "val_accuracy", "params", "macs"):
        trial.set_user_attr(key, report["after"][key])
    trial.set_user_attr("accuracy_before_finetune", report["pruned_before_finetune"]["accuracy"])
    trial.set_user_attr("removed", report["search"]["removed"])
    if not math.isfinite(accuracy):
        trial.set_user_attr("error", "accuracy is not finite")
        return float("nan"), float("nan")  # recorded by Optuna as a failed trial
    return accuracy, kept


def fill(study: optuna.Study, trials: Trials, progress=None) -> None:
    """Run trials until the study holds ``--trials`` counted ones (other workers' included) or ``--timeout`` passes."""
    cfg = trials.cfg
    task = progress.add_task(f"search ({cfg.trials} trials)", total=cfg.trials) if progress is not None else None

    def after_trial(study_, trial):
        if trial.user_attrs.get("surplus"):
            study_.stop()  # the study is full or about to be: look again (below) instead of asking
        elif progress is not None:
            state = (
                "failed: " + str(trial.user_attrs.get("error", ""))
                if trial.state.name == "FAIL"
                else f"{trial.values[0]:.4f}"
            )
            progress.update(
                task, completed=len(counted_trials(study_)), description=f"search: trial {trial.number} {state}"[:100]
            )

    outage = Outage(masked(cfg.storage) if cfg.storage else str(trials.out / "study.db"))
    deadline = time.monotonic() + cfg.timeout if cfg.timeout else None
    try:
        while deadline is None or time.monotonic() < deadline:
            with outage:
                done, running = _slots(study)
                if progress is not None:
                    progress.update(task, completed=done)
                if done >= cfg.trials:
                    break
                free = cfg.trials - done - running
                if free <= 0:  # every open slot is another worker's running trial: wait for it to end or be failed
                    time.sleep(POLL_SECONDS)
                    continue
                study.optimize(
                    lambda trial: trials.objective(study, trial),
                    n_trials=free,
                    timeout=None if deadline is None else max(1.0, deadline - time.monotonic()),
                    n_jobs=min(cfg.n_jobs, free),
                    callbacks=[after_trial],
                    catch=(PruneSnrError, RuntimeError, ValueError),
                )
    finally:  # however it ends (--timeout, an error, Ctrl-C), no trial the last outage lost is left RUNNING
        with contextlib.suppress(*storage_errors()):
            fail_orphans(study)
    if task is not None:
        progress.remove_task(task)


def _slots(study: optuna.Study) -> tuple[int, int]:
    """``(counted trials, running trials that hold a slot)``, once the lost trials are ended: this worker's own
    (:func:`fail_orphans`; called between ``study.optimize`` calls, when none of them runs) and dead workers'."""
    fail_orphans(study)
    fail_dead_trials(study)  # a killed worker's RUNNING trial: failed, retried, and not counted
    existing = study.get_trials(deepcopy=False)
    running = sum(1 for t in existing if t.state == optuna.trial.TrialState.RUNNING and may_count(t))
    return sum(map(counts, existing)), running


def reevaluate_pareto(study: optuna.Study, trials: Trials, progress=None) -> None:
    """Re-run each Pareto trial of a proxy study with its full fine-tuning under ``trials/NNNN/full``; its accuracies go
    to the study's user attribute ``full:NNNN``."""
    todo = [
        t for t in study.best_trials if f"full:{t.number:04d}" not in study.user_attrs and "options" in t.user_attrs
    ]
    task = (
        progress.add_task(f"re-evaluating {len(todo)} Pareto trials fully", total=len(todo))
        if progress and todo
        else None
    )
    for t in todo:
        folder = Path(t.user_attrs["artifacts"]) / "full"
        if (folder / "finetune.pt").exists():  # a re-evaluation killed half-way starts again
            shutil.rmtree(folder)
        report = trials.run(t.number, t.user_attrs["options"], folder, full=True)
        study.set_user_attr(
            f"full:{t.number:04d}",
            {
                "accuracy": report["after"]["accuracy"],
                "val_accuracy": report["after"]["val_accuracy"],
                "artifacts": str(folder),
            },
        )
        if task is not None:
            progress.update(task, advance=1)
    if task is not None:
        progress.remove_task(task)
