"""Optuna search of the accuracy-vs-size trade-off over pruning configurations.

Two objectives: maximize validation accuracy (a seeded part of the training split that neither
the heads nor the fine-tuning see), minimize the kept fraction of params (or MACs). The test
accuracy of every trial is recorded (user attribute ``accuracy``) to grade, never to decide. The
space covers the target, the criterion, the allocation, METHOD options (threshold,
aggregation), truncation, AFCC, fine-tuning epochs and learning rate. Each trial writes its
``pruned.pt`` and ``report.json`` under ``OUT/trials/NNNN`` and records its figures as user
attributes. A failed or NaN trial is recorded as failed and the study goes on.

With ``proxy=F`` each trial fine-tunes on a seeded fraction F of the training set (cheap); with
``proxy="bn"`` it is graded right after pruning with its BatchNorm statistics re-estimated on
``bn_recalibrate`` (default 50) training batches and no fine-tuning (cheaper still). Either way the
Pareto trials are then re-run with their full fine-tuning under ``trials/NNNN/full``; their full
accuracy is stored as study user attribute ``full:NNNN`` and used by :func:`pick`.

Storage: ``sqlite:///OUT/study.db`` by default; any Optuna RDB URL (``postgresql://...``) to
share one study between machines; a path ending in ``.log`` (or ``journal:PATH``) for a
JournalStorage file shared by processes on one machine. Re-running the same command resumes:
finished trials are never redone. Optuna's own pruners (early stopping of trials) are not used.

Example:
    >>> study = run_search("runs/fm/model.pt", trials=20, out="runs/fm/search")  # doctest: +SKIP
    >>> [t.values for t in study.best_trials]  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
import yaml
from torch import nn

from ..atomic import atomic_save_text
from ..checkpoint import build_from_checkpoint, load_checkpoint, with_trained_data
from ..choices import ALLOCATIONS, CRITERIA, CUTS, GROUP_REDUCTIONS, THRESHOLD
from ..config import SearchConfig, dump_yaml, resolve
from ..errors import ConfigError, PruneSnrError
from ..measure import Measurement
from ..models import adopt, count
from ..prune import prune
from ..prune.measuring import measure_if_needed
from ..prune.plan import USER_DATA, settle
from .workers import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    POLL_SECONDS,
    WORKER_ID,
    Outage,
    StorageError,
    claim_slot,
    counts,
    fail_dead_trials,
    masked,
    may_count,
    retry_callback,
    storage_errors,
)

#: BatchNorm recalibration batches of a ``proxy="bn"`` trial when ``bn_recalibrate`` is not set (EagleEye's 50)
BN_PROXY_BATCHES = 50

#: The search space, one row per parameter: how Optuna draws it. Every name is a key of
#: :class:`prune_snr.config.PruneConfig` and a ``--fix NAME=VALUE`` key; categorical rows come from
#: the rows of :mod:`prune_snr.choices` marked ``searched``; ``None`` as an int upper bound means ``max_finetune_epochs``.
PARAMETERS = {
    "target": ("float", (0.2, 0.8)),
    "criterion": ("categorical", CRITERIA.searched),
    "allocation": ("categorical", ALLOCATIONS.searched),
    "threshold": ("categorical", (0.2, THRESHOLD, 0.4)),
    "group_reduction": ("categorical", GROUP_REDUCTIONS.searched),
    "truncate": ("categorical", (False, True)),
    "afcc": ("categorical", (False, True)),
    "finetune_epochs": ("int", (0, None)),
    "finetune_lr": ("log-float", (1e-3, 5e-2)),
}


#: ``--space`` (a row of :data:`prune_snr.choices.SPACES`): the parameters each restricted space changes (a 1-tuple
#: pins a parameter; ``None`` removes it: not drawn, and no ``--fix`` key).
SPACE_EDITS = {
    "full": {},
    # torch-pruning's own options, plus the depth cut that reads no measurement (--cut budget), so that a front
    # against this one isolates the measurement rather than truncation itself
    "torch-pruning": {"criterion": CRITERIA.baseline, "allocation": ALLOCATIONS.baseline, "truncate": (False, True),
                      "cut": CUTS.baseline, "afcc": (False,), "threshold": None, "group_reduction": None},
}


def space_of(name: str) -> dict:
    """The parameters a ``--space`` draws, which are also its ``--fix`` keys: name -> (kind, choices or range)."""
    rows = dict(PARAMETERS)
    for key, values in SPACE_EDITS[name].items():
        if values is None:
            del rows[key]
        else:
            rows[key] = ("categorical", values)
    return rows


def suggest(trial: optuna.Trial, name: str, fixed: dict, max_finetune_epochs: int, parameters: dict | None = None):
    """Draw parameter ``name`` (a fixed value comes through the sampler, see :func:`run_search`)."""
    kind, space = (parameters or PARAMETERS)[name]
    if kind == "categorical":
        choices = tuple(space) + ((fixed[name],) if name in fixed and fixed[name] not in space else ())
        return trial.suggest_categorical(name, choices)
    if kind == "int":
        return trial.suggest_int(name, space[0], max_finetune_epochs if space[1] is None else space[1])
    return trial.suggest_float(name, *space, log=kind == "log-float")


def parse_fix(text: str | None) -> dict:
    """``"truncate=false,target=0.5"`` -> ``{"truncate": False, "target": 0.5}`` (values read as YAML)."""
    fixed = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--fix {item!r}: write NAME=VALUE")
        fixed[name.strip()] = yaml.safe_load(value)
    return fixed


def make_storage(storage: str | None, out: Path):
    """An Optuna storage from a URL, a ``.log`` journal path, or the default SQLite file in ``out``."""
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out / 'study.db').resolve()}"
    if storage.startswith("journal:") or storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = storage.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    engine = {"pool_pre_ping": True}  # a connection the server dropped (restart) is replaced, not used
    if storage.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": 10}
    try:
        for attempt in range(5):
            try:
                # Heartbeats fail (and retry) the trials of a killed worker; see search/workers.py.
                return optuna.storages.RDBStorage(storage, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_INTERVAL,
                                                  grace_period=GRACE_PERIOD, heartbeat_stale_trial_callback=retry_callback())
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)  # workers starting at once race to create Optuna's tables: the first one does
    except storage_errors() as exc:
        cause = str(exc.__cause__ or exc).splitlines()[0]
        raise StorageError(f"--storage {masked(storage)}: cannot connect ({cause}); check the host and port, that the server runs, "
                           "the user, password and database name") from exc
    except Exception as exc:  # sqlalchemy raises its own types for bad URLs/drivers
        raise ConfigError(f"--storage {masked(storage)}: {str(exc).splitlines()[0]}") from exc


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
        raise ConfigError(f"θ = {threshold}: the measurement keeps only some filters' field matrices, so its SNR holds at its own "
                          f"θ = {measurement.threshold} only; measure with --save-fields all")
    meta = {**measurement.meta, "options": {**measurement.meta["options"], "threshold": threshold}}
    return dataclasses.replace(measurement, meta=meta, filter_stats={})


def rethresholdable(measurement: Measurement) -> bool:
    """Whether every point keeps every filter's field matrix: what reading the measurement at another θ needs."""
    return all(measurement.keeps_every_matrix(n) for n in measurement.fields)


def prepare(checkpoint: str | Path | nn.Module, cfg: SearchConfig, *, measurement: Measurement | None = None, progress=None,
            data: dict | None = None):
    """``(payload, prune options, model, measurement, seconds it took)`` of a study's checkpoint (or model, with
    ``data`` the user's datasets; no payload then): the prune options every trial starts from, settled
    (:func:`prune_snr.prune.plan.settle`), and the given measurement, ``cfg.prune.measurement``'s, or one made here
    (None where the space needs none)."""
    if isinstance(checkpoint, nn.Module):
        payload, base_cfg = None, cfg.prune
        model = adopt(checkpoint, image_shape=data["train"].image_shape if data else None)
    else:
        payload = load_checkpoint(checkpoint)
        base_cfg = with_trained_data(cfg.prune, payload, checkpoint)
        model = build_from_checkpoint(payload)
    if measurement is None and base_cfg.measurement:
        measurement = Measurement.load(base_cfg.measurement)
    base_cfg = settle(base_cfg, model, measurement=measurement, dataset=USER_DATA if data else None)
    t_measure = time.perf_counter()
    where = {"dataset": base_cfg.dataset} if data is None else {"dataset": None, **data}
    searched = "threshold" in space_of(cfg.space)  # a measurement made here keeps every matrix, so trials may read it at any θ
    options = dataclasses.replace(base_cfg.measure, save_fields="all") if searched else base_cfg.measure
    measurement, _ = measure_if_needed(model, measurement, needed=searched, options=options,
                                       progress=progress, **where)
    return payload, base_cfg, model, measurement, time.perf_counter() - t_measure


def run_search(
    checkpoint: str | Path | nn.Module,
    cfg: SearchConfig | None = None,
    *,
    out: str | Path,
    measurement: Measurement | None = None,
    fixed: dict | None = None,
    progress=None,
    worker: int | None = None,
    data: dict | None = None,
    **options,
) -> optuna.Study:
    """Run (or resume) the study until it holds ``cfg.trials`` finished trials; return it.

    Args:
        checkpoint: the trained model (``model.pt``), or a model object with ``data`` (the user's checked datasets).
        cfg: the options (:class:`prune_snr.config.SearchConfig`; ``cfg.prune`` is where every trial
            starts, the drawn parameters replace its values). Keyword ``options`` (flat keys:
            ``trials``, ``metric``, ``round_to``, ``seed``, ``finetune_lr``, ...) override it.
        out: the study folder (``study.db``, ``trials/NNNN``).
        measurement: reuse a measurement of the checkpoint (default: ``cfg.prune.measurement``'s
            folder, else measured here once with ``cfg.prune.measure``).
        fixed: pin parameters instead of searching them, e.g. ``{"truncate": False, "target": 0.5}``
            (added to ``cfg.fix``).
        worker: this process's index among several running the study (gives it its own sampler
            stream); any number of processes may run one study, see :mod:`prune_snr.search.workers`.

    Raises:
        StorageError: the storage is unreachable (at the start, or for longer than
            ``workers.RETRY_SECONDS`` later on).
    """
    cfg = resolve(SearchConfig, overrides=options, base=cfg)
    fixed = {**parse_fix(cfg.fix), **(fixed or {})}
    parameters = space_of(cfg.space)
    unknown = set(fixed) - set(parameters)
    if unknown:
        raise ConfigError(f"--fix: unknown parameter {sorted(unknown)[0]!r} in --space {cfg.space}; choose from {', '.join(parameters)}")
    metric, seed = cfg.prune.metric, cfg.prune.seed
    fraction = float(cfg.proxy) if cfg.proxy not in (None, "bn") else 1.0
    proxied = cfg.proxy == "bn" or fraction < 1
    out = Path(out)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials stay in the study (state FAIL, user attr "error")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage_obj = make_storage(cfg.storage, out)  # an unreachable storage is one line before any work
    payload, base_cfg, model, measurement, measure_seconds = prepare(checkpoint, cfg, measurement=measurement, progress=progress,
                                                                     data=data)
    source = f"{type(model).__name__} object" if payload is None else str(Path(checkpoint).resolve())
    if "threshold" in parameters and "threshold" not in fixed and measurement is not None and not rethresholdable(measurement):
        warnings.warn(f"θ stays at the measurement's {measurement.threshold}: it keeps the field matrices of only some filters "
                      "(measure with --save-fields all to search θ)", stacklevel=2)
        fixed["threshold"] = measurement.threshold
    if model.spec.get("user_model") and "truncate" in parameters:  # a cut rebuilds the architecture by name
        fixed.setdefault("truncate", False)
    atomic_save_text(out / "config.yaml", dump_yaml(dataclasses.replace(cfg, prune=base_cfg)))
    for attempt in range(3):  # workers starting at once may race to create the study or its attributes
        try:
            existing = 0
            if cfg.study_name in {s.study_name for s in optuna.get_all_study_summaries(storage_obj)}:
                existing = len(optuna.load_study(study_name=cfg.study_name, storage=storage_obj).trials)
            # A resumed study gets a fresh sampler stream, so it does not replay the first trials' parameters; so does each worker.
            study = optuna.create_study(study_name=cfg.study_name, storage=storage_obj, load_if_exists=True,
                                        directions=["maximize", "minimize"],
                                        sampler=optuna.samplers.PartialFixedSampler(
                                            fixed, optuna.samplers.NSGAIISampler(seed=seed + existing + 1009 * (worker or 0))))
            study.set_metric_names(["val_accuracy", f"{metric}_kept"])
            study.set_user_attr("base", count(model))
            study.set_user_attr("space", cfg.space)
            if measurement is not None and "measurement_seconds" not in study.user_attrs:  # the measurement's cost, part of this arm's
                recorded = measurement.meta.get("timings", {}).get("total_s")
                study.set_user_attr("measurement_seconds", recorded if recorded is not None else measure_seconds)
            break
        except sqlalchemy.exc.IntegrityError:
            if attempt == 2:
                raise

    def run_trial(number: int, opts: dict, folder: Path, full: bool) -> dict:
        opts = {**opts, "finetune_fraction": 1.0 if full else fraction}
        if cfg.proxy == "bn" and not full:
            opts.update(finetune_epochs=0, bn_recalibrate=base_cfg.bn_recalibrate or BN_PROXY_BATCHES)
        if "truncate_layers" in opts:  # a study from before PruneConfig named it so
            opts["truncate"] = opts.pop("truncate_layers")
        theta = opts.get("threshold", measurement.threshold if measurement is not None else THRESHOLD)
        trial_model = model if payload is None else build_from_checkpoint(payload)  # prune works on a copy either way
        _, report = prune(trial_model, cfg=base_cfg, measurement=with_threshold(measurement, theta) if measurement is not None else None,
                          seed=seed + number, out=folder,
                          config={"source": source, "trial": number}, **(data or {}), **opts)
        return report

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", WORKER_ID)
        if not claim_slot(study, trial, cfg.trials):
            raise optuna.TrialPruned("surplus: the other workers' trials fill the study")
        opts = {name: suggest(trial, name, fixed, cfg.max_finetune_epochs, parameters) for name in parameters}
        folder = (out / "trials" / f"{trial.number:04d}").resolve()
        trial.set_user_attr("artifacts", str(folder))
        trial.set_user_attr("options", opts)
        try:
            report = run_trial(trial.number, opts, folder, full=not proxied)
        except Exception as exc:
            trial.set_user_attr("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise
        accuracy = report["after"]["val_accuracy"]
        if metric == "latency":
            kept = report["latency"][f"batch_{base_cfg.latency_batch}"]["fraction"]
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

    task = progress.add_task(f"search ({cfg.trials} trials)", total=cfg.trials) if progress is not None else None

    def after_trial(study_, trial):
        if trial.user_attrs.get("surplus"):
            study_.stop()  # the study is full or about to be: look again (below) instead of asking
        elif progress is not None:
            state = "failed: " + str(trial.user_attrs.get("error", "")) if trial.state.name == "FAIL" else f"{trial.values[0]:.4f}"
            progress.update(task, completed=len(counted_trials(study_)), description=f"search: trial {trial.number} {state}"[:100])

    outage = Outage(masked(cfg.storage) if cfg.storage else str(out / "study.db"))
    deadline = time.monotonic() + cfg.timeout if cfg.timeout else None
    while deadline is None or time.monotonic() < deadline:
        with outage:
            fail_dead_trials(study)  # a killed worker's RUNNING trial: failed, retried, and not counted
            trials = study.get_trials(deepcopy=False)
            done = sum(map(counts, trials))
            if progress is not None:
                progress.update(task, completed=done)
            if done >= cfg.trials:
                break
            free = cfg.trials - done - sum(1 for t in trials if t.state == optuna.trial.TrialState.RUNNING and may_count(t))
            if free <= 0:  # every open slot is another worker's running trial: wait for it to finish or be failed
                time.sleep(POLL_SECONDS)
                continue
            study.optimize(objective, n_trials=free, timeout=None if deadline is None else max(1.0, deadline - time.monotonic()),
                           n_jobs=min(cfg.n_jobs, free), callbacks=[after_trial], catch=(PruneSnrError, RuntimeError, ValueError))
    if task is not None:
        progress.remove_task(task)
    if proxied:
        todo = [t for t in study.best_trials if f"full:{t.number:04d}" not in study.user_attrs and "options" in t.user_attrs]
        task = progress.add_task(f"re-evaluating {len(todo)} Pareto trials fully", total=len(todo)) if progress and todo else None
        for t in todo:
            folder = Path(t.user_attrs["artifacts"]) / "full"
            if (folder / "finetune.pt").exists():  # a re-evaluation killed half-way starts again
                import shutil

                shutil.rmtree(folder)
            report = run_trial(t.number, t.user_attrs["options"], folder, full=True)
            study.set_user_attr(f"full:{t.number:04d}", {"accuracy": report["after"]["accuracy"],
                                                         "val_accuracy": report["after"]["val_accuracy"], "artifacts": str(folder)})
            if task is not None:
                progress.update(task, advance=1)
        if task is not None:
            progress.remove_task(task)
    return study


def full_result(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    """The trial's ``val_accuracy`` (decides), ``accuracy`` (test: grades) and artifacts folder,
    from its full re-evaluation when it has one."""
    full = study.user_attrs.get(f"full:{trial.number:04d}")
    return full or {"val_accuracy": trial.values[0], "accuracy": trial.user_attrs.get("accuracy"),
                    "artifacts": trial.user_attrs.get("artifacts")}


def pareto_rows(study: optuna.Study) -> list[dict]:
    """One dict per Pareto trial, smallest first: proxy and full accuracy, kept fraction, parameters."""
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[1]):
        # studies before PartialFixedSampler
        fixed = {k.removeprefix("fixed_"): v for k, v in t.user_attrs.items() if k.startswith("fixed_")}
        full = study.user_attrs.get(f"full:{t.number:04d}")
        rows.append({"trial": t.number, "val_accuracy": t.values[0], "accuracy": t.user_attrs.get("accuracy"), "kept": t.values[1],
                     **fixed, **t.params,
                     "full_val_accuracy": full.get("val_accuracy") if full else None,
                     "full_accuracy": full["accuracy"] if full else None,
                     "params": t.user_attrs.get("params"), "macs": t.user_attrs.get("macs"),
                     "artifacts": full["artifacts"] if full else t.user_attrs.get("artifacts")})
    return rows


def save_pareto_plot(study: optuna.Study, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_pareto_front

    from ..measure.plots import save_figure

    ax = plot_pareto_front(study, target_names=study.metric_names or ["accuracy", "kept"])
    return save_figure(ax.figure, path)


def pick(study: optuna.Study, rule: str) -> optuna.trial.FrozenTrial:
    """The Pareto trial of highest validation accuracy meeting every condition of ``rule``.

    ``accuracy`` in a rule is the validation accuracy (a decision never reads the test split);
    it is the full re-evaluation's where the study ran with a proxy.

    ``rule`` is comma-separated ``KEY OP VALUE`` with KEY in ``accuracy``, ``params``, ``macs``
    (params/macs: the kept fraction when ≤ 1, an absolute count otherwise) and OP in ``<=, >=, <, >``.
    Example: ``"params<=0.5,accuracy>=0.9"``.
    """
    import operator
    import re

    ops = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
    conditions = []
    for part in filter(None, (p.strip() for p in rule.split(","))):
        m = re.fullmatch(r"(accuracy|params|macs)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)", part)
        if not m:
            raise ConfigError(f"--pick {part!r}: write KEY OP VALUE with KEY accuracy|params|macs, e.g. params<=0.5")
        conditions.append((m.group(1), ops[m.group(2)], float(m.group(3))))
    base = study.user_attrs.get("base", {})

    def value(t, key, limit):
        if key == "accuracy":
            return full_result(study, t)["val_accuracy"]
        absolute = t.user_attrs.get(key)
        return absolute if limit > 1 else absolute / base[key]

    def ok(t):
        return all(op(value(t, key, limit), limit) for key, op, limit in conditions)

    candidates = [t for t in study.best_trials if ok(t)]
    if not candidates:
        raise ConfigError(f"--pick {rule!r}: no Pareto trial meets it; see the Pareto table and relax the rule")
    return max(candidates, key=lambda t: full_result(study, t)["val_accuracy"])


def write_pick(study: optuna.Study, rule: str, out: str | Path) -> tuple[optuna.trial.FrozenTrial, dict, Path]:
    """Copy the :func:`pick` of ``rule`` (its full re-evaluation where there is one) to ``OUT/pruned.pt``, atomically.

    Returns ``(trial, its full_result, the path written)``.
    """
    from ..atomic import atomic_copy

    trial = pick(study, rule)
    chosen = full_result(study, trial)
    source = Path(chosen["artifacts"]) / "pruned.pt"
    if not source.is_file():
        raise ConfigError(f"trial {trial.number}'s {source} is missing; was the study run on another machine? copy its trials/ folder here")
    return trial, chosen, atomic_copy(source, Path(out) / "pruned.pt")


def load_study(out: str | Path, storage: str | None = None, study_name: str = "prune-snr") -> optuna.Study:
    """The study a ``prune-snr search --out OUT`` wrote (or the one in ``storage``)."""
    out = Path(out)
    if storage is None and not (out / "study.db").is_file() and (out / "study.log").is_file():
        storage = str(out / "study.log")  # written by search --workers
    if storage is None and not (out / "study.db").is_file():
        raise ConfigError(f"{out} holds no study.db; run prune-snr search --out {out} first (or pass --storage)")
    try:
        return optuna.load_study(study_name=study_name, storage=make_storage(storage, out))
    except KeyError:
        raise ConfigError(f"no study named {study_name!r} in the storage; check --study-name") from None
