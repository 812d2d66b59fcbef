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
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from torch import nn

from ..atomic import atomic_copy, atomic_save_text
from ..checkpoint import build_from_checkpoint, load_checkpoint, with_trained_data
from ..config import SearchConfig, dump_yaml, flat_values, resolve, spelling
from ..config.pruning import pick_conditions
from ..errors import ConfigError
from ..measure import Measurement
from ..models import adopt, count
from ..prune.measuring import measure_if_needed
from ..prune.plan import USER_DATA, settle
from .space import PARAMETERS, SPACE_EDITS, parse_fix, space_of, suggest  # noqa: F401  (the space, named here too)
from .trials import Trials, counted_trials, fill, reevaluate_pareto, rethresholdable, with_threshold  # noqa: F401
from .workers import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    JournalStorage,
    RDBStorage,
    StorageError,
    masked,
    retry_callback,
    storage_errors,
)


def make_storage(storage: str | None, out: Path):
    """An Optuna storage from a URL, a ``.log`` journal path, or the default SQLite file in ``out``."""
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out / 'study.db').resolve()}"
    if storage.startswith("journal:") or storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

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
                return RDBStorage(
                    storage,
                    engine_kwargs=engine,
                    heartbeat_interval=HEARTBEAT_INTERVAL,
                    grace_period=GRACE_PERIOD,
                    heartbeat_stale_trial_callback=retry_callback(),
                )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)  # workers starting at once race to create Optuna's tables: the first one does
    except storage_errors() as exc:
        cause = str(exc.__cause__ or exc).splitlines()[0]
        raise StorageError(
            f"--storage {masked(storage)}: cannot connect ({cause}); check the host and port, that the server runs, "
            "the user, password and database name"
        ) from exc
    except Exception as exc:  # sqlalchemy raises its own types for bad URLs/drivers
        raise ConfigError(f"--storage {masked(storage)}: {str(exc).splitlines()[0]}") from exc


def prepare(
    checkpoint: str | Path | nn.Module,
    cfg: SearchConfig,
    *,
    measurement: Measurement | str | Path | None = None,
    progress=None,
    data: dict | None = None,
    classifier: str | None = None,
):
    """``(payload, prune options, model, measurement, seconds it took)`` of a study's checkpoint (or model, with
    ``data`` the user's datasets; no payload then): the prune options every trial starts from, settled
    (:func:`prune_snr.prune.plan.settle`), and the given measurement, ``cfg.prune.measurement``'s, or one made here
    (None where the space needs none)."""
    if isinstance(checkpoint, nn.Module):
        payload, base_cfg = None, cfg.prune
        model = adopt(checkpoint, image_shape=data["train"].image_shape if data else None, classifier=classifier)
    else:
        payload = load_checkpoint(checkpoint)
        base_cfg = with_trained_data(cfg.prune, payload, checkpoint)
        model = build_from_checkpoint(payload)
    measurement = Measurement.given(measurement, base_cfg.measurement)  # a folder too, as prune takes
    base_cfg = settle(base_cfg, model, measurement=measurement, dataset=USER_DATA if data else None)
    t_measure = time.perf_counter()
    where = {"dataset": base_cfg.dataset} if data is None else {"dataset": None, **data}
    # a measurement made here keeps every matrix, so trials may read it at any θ
    searched = "threshold" in space_of(cfg.space)
    options = dataclasses.replace(base_cfg.measure, save_fields="all") if searched else base_cfg.measure
    measurement, _ = measure_if_needed(model, measurement, needed=searched, options=options, progress=progress, **where)
    return payload, base_cfg, model, measurement, time.perf_counter() - t_measure


def run_search(
    checkpoint: str | Path | nn.Module,
    cfg: SearchConfig | None = None,
    *,
    out: str | Path,
    measurement: Measurement | str | Path | None = None,
    fixed: dict | None = None,
    progress=None,
    worker: int | None = None,
    data: dict | None = None,
    classifier: str | None = None,
    **options,
) -> optuna.Study:
    """Run (or resume) the study until it holds ``cfg.trials`` finished trials; return it.

    Args:
        checkpoint: the trained model (``model.pt``), or a model object with ``data`` (the user's checked datasets).
        cfg: the options (:class:`prune_snr.config.SearchConfig`; ``cfg.prune`` is where every trial
            starts, the drawn parameters replace its values). Keyword ``options`` (flat keys:
            ``trials``, ``metric``, ``round_to``, ``seed``, ...) override it; a searched parameter among them
            (``target``, ``finetune_lr``, ...) is pinned, as ``fix`` pins it.
        out: the study folder (``study.db``, ``trials/NNNN``).
        measurement: reuse a measurement of the checkpoint, or the folder it was saved to (default:
            ``cfg.prune.measurement``'s folder, else measured here once with ``cfg.prune.measure``).
        fixed: pin parameters instead of searching them, e.g. ``{"truncate": False, "target": 0.5}``
            (added to ``cfg.fix``).
        classifier: a model object's layer that gives the logits, where it is not the last ``Linear``.
        worker: this process's index among several running the study (gives it its own sampler
            stream); any number of processes may run one study, see :mod:`prune_snr.search.workers`.

    Raises:
        StorageError: the storage is unreachable (at the start, or for longer than
            ``workers.RETRY_SECONDS`` later on).
    """
    cfg = resolve(SearchConfig, overrides=options, base=cfg)
    fixed, parameters = _fixed_and_searched(cfg, fixed, given=options)
    out = Path(out)
    _quiet_optuna()
    storage_obj = make_storage(cfg.storage, out)  # an unreachable storage is one line before any work
    payload, base_cfg, model, measurement, measure_seconds = prepare(
        checkpoint, cfg, measurement=measurement, progress=progress, data=data, classifier=classifier
    )
    _pin_unsearchable(fixed, parameters, measurement, model)
    atomic_save_text(out / "config.yaml", dump_yaml(dataclasses.replace(cfg, prune=base_cfg)))
    study = open_study(
        cfg,
        storage_obj,
        fixed,
        worker=worker,
        base=count(model),
        measurement=measurement,
        measure_seconds=measure_seconds,
    )
    trials = Trials(
        cfg=cfg,
        base_cfg=base_cfg,
        model=model,
        payload=payload,
        measurement=measurement,
        data=data or {},
        out=out,
        fixed=fixed,
        parameters=parameters,
        source=f"{type(model).__name__} object" if payload is None else str(Path(checkpoint).resolve()),
    )
    fill(study, trials, progress)
    if trials.proxied:
        reevaluate_pareto(study, trials, progress)
    return study


def _fixed_and_searched(cfg: SearchConfig, fixed: dict | None, *, given: dict) -> tuple[dict, dict]:
    """``(the pinned parameters, the space's parameters)``. Pinned: the searched parameters among the ``given``
    keyword options (``target=0.3`` pins the target; a trial's draw would replace it), then ``cfg.fix``, then
    ``fixed``; a pin outside the space, or one pinned twice to different values, is an error."""
    values = flat_values(cfg)
    parameters = space_of(cfg.space)
    pins = [
        ({k: values[k] for k in given if k in parameters}, "options"),
        (parse_fix(cfg.fix), "fix"),
        (fixed, "fixed"),
    ]
    merged: dict = {}
    for pinned, where in pins:
        for name, value in (pinned or {}).items():
            if name in merged and merged[name] != value:
                raise ConfigError(f"{name} pinned twice ({merged[name]!r}, then {value!r} in {where}): give it once")
            merged[name] = value
    unknown = set(merged) - set(parameters)
    if unknown:
        raise ConfigError(
            f"--fix: unknown parameter {sorted(unknown)[0]!r} in --space {cfg.space}; choose from "
            f"{', '.join(parameters)}"
        )
    return merged, parameters


def _quiet_optuna() -> None:
    """Silence Optuna's per-trial log and its experimental-feature warnings."""
    # failed trials stay in the study (state FAIL, user attr "error")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _pin_unsearchable(fixed: dict, parameters: dict, measurement: Measurement | None, model: nn.Module) -> None:
    """Pin, in ``fixed``, what this study cannot search: θ where the measurement kept only some filters' field
    matrices (with a warning), truncation for a user's model."""
    if (
        "threshold" in parameters
        and "threshold" not in fixed
        and measurement is not None
        and not rethresholdable(measurement)
    ):
        spelling.warn(
            f"θ stays at the measurement's {measurement.threshold}: it keeps the field matrices of only some filters "
            "(measure with --save-fields all to search θ)",
            stacklevel=3,  # run_search's caller, as the user sees it
        )
        fixed["threshold"] = measurement.threshold
    if model.spec.get("user_model") and "truncate" in parameters:  # a cut rebuilds the architecture by name
        fixed.setdefault("truncate", False)


def open_study(
    cfg: SearchConfig,
    storage,
    fixed: dict,
    *,
    worker: int | None,
    base: dict,
    measurement: Measurement | None,
    measure_seconds: float,
) -> optuna.Study:
    """The study (created, or loaded to resume) with its sampler, metric names and attributes."""
    for attempt in range(3):  # workers starting at once may race to create the study or its attributes
        try:
            existing = 0
            if cfg.study_name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
                existing = len(optuna.load_study(study_name=cfg.study_name, storage=storage).trials)
            # A resumed study gets a fresh sampler stream, so it does not replay the first trials' parameters;
            # so does each worker.
            sampler = optuna.samplers.NSGAIISampler(seed=cfg.prune.seed + existing + 1009 * (worker or 0))
            study = optuna.create_study(
                study_name=cfg.study_name,
                storage=storage,
                load_if_exists=True,
                directions=["maximize", "minimize"],
                sampler=optuna.samplers.PartialFixedSampler(fixed, sampler),
            )
            study.set_metric_names(["val_accuracy", f"{cfg.prune.metric}_kept"])
            study.set_user_attr("base", base)
            study.set_user_attr("space", cfg.space)
            if (
                measurement is not None and "measurement_seconds" not in study.user_attrs
            ):  # the measurement's cost, part of this arm's
                recorded = measurement.meta.get("timings", {}).get("total_s")
                study.set_user_attr("measurement_seconds", recorded if recorded is not None else measure_seconds)
            return study
        except sqlalchemy.exc.IntegrityError:
            if attempt == 2:
                raise


def full_result(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    """The trial's ``val_accuracy`` (decides), ``accuracy`` (test: grades) and artifacts folder,
    from its full re-evaluation when it has one."""
    full = study.user_attrs.get(f"full:{trial.number:04d}")
    return full or {
        "val_accuracy": trial.values[0],
        "accuracy": trial.user_attrs.get("accuracy"),
        "artifacts": trial.user_attrs.get("artifacts"),
    }


def pareto_rows(study: optuna.Study) -> list[dict]:
    """One dict per Pareto trial, smallest first: proxy and full accuracy, kept fraction, parameters."""
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[1]):
        # studies before PartialFixedSampler
        fixed = {k.removeprefix("fixed_"): v for k, v in t.user_attrs.items() if k.startswith("fixed_")}
        full = study.user_attrs.get(f"full:{t.number:04d}")
        rows.append(
            {
                "trial": t.number,
                "val_accuracy": t.values[0],
                "accuracy": t.user_attrs.get("accuracy"),
                "kept": t.values[1],
                **fixed,
                **t.params,
                "full_val_accuracy": full.get("val_accuracy") if full else None,
                "full_accuracy": full["accuracy"] if full else None,
                "params": t.user_attrs.get("params"),
                "macs": t.user_attrs.get("macs"),
                "artifacts": full["artifacts"] if full else t.user_attrs.get("artifacts"),
            }
        )
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

    ops = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
    conditions = [(key, ops[op], limit) for key, op, limit in pick_conditions(rule)]
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
    trial = pick(study, rule)
    chosen = full_result(study, trial)
    source = Path(chosen["artifacts"]) / "pruned.pt"
    if not source.is_file():
        raise ConfigError(
            f"trial {trial.number}'s {source} is missing; was the study run on another machine? copy "
            "its trials/ folder here"
        )
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
