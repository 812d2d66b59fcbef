"""``prune``: measurement-driven structural pruning, truncation, AFCC and fine-tuning, as a list of stages.

:func:`prune` settles the options (:func:`~prune_snr.prune.plan.plan`), then the runner
(:func:`~prune_snr.prune.run.run`) runs the stages in the order :data:`BEFORE_FINETUNE`, fine-tuning,
:data:`AFTER_FINETUNE`; each takes the shared context and the current model and returns the next model
and its part of the :class:`~prune_snr.prune.report.PruneReport`, written once, at the end, as ``report.json``.
:func:`prune_checkpoint` is ``prune-snr prune``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from ..checkpoint import build_from_checkpoint, load_checkpoint, with_trained_data
from ..config import PruneConfig, resolve
from ..data.user import user_data
from ..errors import ConfigError
from ..measure import Measurement
from ..measure.pipeline import plan_validation
from ..models import adopt, logits_width, name_classifier
from .afcc import afcc_stage
from .blocks import drop_stage
from .measuring import measure_stage
from .plan import plan
from .recalibrate import recalibrate_stage
from .refit import refit_stage
from .report import PruneReport, built_in_finetune_keys, grade_original, grade_pruned, latency_stage
from .run import Stage, run
from .steps import prune_stage
from .truncate import truncate_stage

#: What a resumed run finds done in ``finetune.pt``: grade the original, measure it if a stage needs it,
#: cut it (``--truncate``), drop residual blocks (``--drop-blocks``), prune channels to the target,
#: re-estimate BatchNorm statistics (``--bn-recalibrate``; before the refit, which reads the features they give),
#: retrain the classifier (``--refit-epochs``), grade the pruned model.
BEFORE_FINETUNE: tuple[Stage, ...] = (
    grade_original,
    measure_stage,
    truncate_stage,
    drop_stage,
    prune_stage,
    recalibrate_stage,
    refit_stage,
    grade_pruned,
)
#: After fine-tuning (and ``--finetune-keep best``): time it against the original (``--metric latency``), AFCC.
AFTER_FINETUNE: tuple[Stage, ...] = (latency_stage, afcc_stage)


def prune(
    model: nn.Module,
    dataset: str | None = None,
    cfg: PruneConfig | None = None,
    *,
    train=None,
    val=None,
    test=None,
    finetune: Callable[[nn.Module], nn.Module | None] | None = None,
    classifier: str | None = None,
    measurement: Measurement | str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    config: dict | None = None,
    progress=None,
    backbone_saw_val: bool | None = None,
    **options,
) -> tuple[nn.Module, PruneReport]:
    """Prune ``model`` to remove ``cfg.target`` of its prunable params/MACs/latency, then fine-tune.

    Args:
        model: a trained classifier (``prune_snr.load(...)``).
        dataset: the dataset it was trained on (name for :func:`prune_snr.build_dataset`; default
            ``cfg.dataset``).
        train, val, test: your own data instead (a ``Dataset`` or ``DataLoader`` of ``(image, label)`` each; ``val``
            optional, else carved from ``train`` as a measurement of the same data carves it). The model handed in is
            never changed; the pruned model is a copy, an instance of its class.
        finetune: your own fine-tuning, ``finetune(model) -> nn.Module | None`` (None: trained in place), called after
            pruning instead of the built-in loop; ``finetune_keep="best"`` and the report still apply.
        classifier: the name of the layer that gives the logits, where it is not the last ``Linear``.
        cfg: the options (:class:`prune_snr.config.PruneConfig`); keyword ``options`` (its flat
            keys: ``target``, ``criterion``, ``allocation``, ``truncate``, ``finetune_epochs``,
            ``threshold``, ...) override it, as a convenience. The main ones:

            - ``target``: fraction of the prunable ``metric`` to remove, in (0, 1);
            - ``metric``: ``params``, ``macs`` or ``latency`` (of the exported model in ONNX Runtime
              on this machine at ``latency_batch``, relative to the unpruned model);
            - ``criterion`` / ``allocation``: rows of :data:`prune_snr.choices.CRITERIA` /
              :data:`prune_snr.choices.ALLOCATIONS`;
            - ``round_to``: keep channel counts multiples of this (default: the alignment ONNX
              Runtime's CPU convolutions run fast on here, 16 with AVX-512 else 8; 1 = off);
            - ``truncate``: cut the network where later layers add less than ``delta`` validation
              accuracy; ``target`` still counts from the original model;
            - ``iterative_steps`` with ``remeasure``: prune in that many equal steps and measure the
              pruned model anew between them (needs a measured criterion or allocation);
            - ``drop_blocks``: drop single residual blocks (identity shortcut) while the model stays
              within ``delta`` of the full model's validation accuracy (after any cut);
            - ``bn_recalibrate``: re-estimate every BatchNorm's running statistics on that many training batches
              after pruning, before grading and fine-tuning (the report's ``bn_recalibration`` holds the grade without);
            - ``afcc``: keep only classifier weights inside each filter's clusters (after fine-tuning);
            - ``cfg.finetune``: epochs (0 = none), lr, fraction (a seeded part of the training split:
              a cheap proxy for search trials), distill (from the unpruned model), keep ("best": undo
              fine-tuning that lowered validation accuracy; the report's ``finetune`` says which was kept);
            - ``cfg.measure``: the options of the measurement made here when one is needed and
              ``measurement`` is not given.
        measurement: reuse a measurement of ``model``, or the folder a ``prune-snr measure`` run (or
            ``Measurement.save``) wrote (default: ``cfg.measurement``'s folder, else measured here when a stage
            needs one).
        out: folder for ``config.yaml`` (the settled options), ``measurement/`` (a measurement made here; a resumed
            run reads it back), ``finetune.pt`` (resumable fine-tuning), ``pruned.pt`` and ``report.json``.

    Returns:
        ``(pruned model, report)``: the :class:`PruneReport`, read as the mapping ``report.json`` holds
        (``report["after"]["accuracy"]``; ``report.to_json()`` is the file). The decisions read the validation split
        (the measurement's ``val_fraction``, else 0.1), fine-tuning the rest of the training split, and the
        test split grades.

    Raises:
        ConfigError: bad target/metric/criterion/allocation, or an unreachable target.

    Example:
        >>> pruned, report = prune(prune_snr.load("runs/fm/model.pt"), "fashion-mnist", target=0.5)  # doctest: +SKIP
        >>> report["after"]["accuracy"]  # doctest: +SKIP
    """
    given = sorted(built_in_finetune_keys() & set(options)) if finetune is not None else []
    if given:
        raise ConfigError(
            f"{given[0]}= sets the built-in fine-tuning, which finetune= replaces: give one of them "
            "(finetune_keep applies to both)"
        )
    cfg = resolve(PruneConfig, overrides=options, base=cfg)
    name_classifier(model, classifier)  # before the label count is read from it
    data = user_data(
        lambda image: logits_width(model, image), dataset=dataset, train=train, val=val, test=test, command="prune"
    )
    # the caller's model stays as it was
    model = adopt(model, image_shape=data["train"].image_shape if data else None, classifier=classifier)
    ctx = plan(
        model,
        cfg,
        dataset=dataset,
        measurement=measurement,
        backbone_saw_val=backbone_saw_val,
        progress=progress,
        data=data,
        finetune=finetune,
    )
    return run(
        ctx, before_finetune=BEFORE_FINETUNE, after_finetune=AFTER_FINETUNE, out=out, resume=resume, config=config
    )


def prune_checkpoint(
    checkpoint: str | Path, cfg: PruneConfig, *, out: str | Path, resume: bool = False, progress=None
) -> tuple[nn.Module, PruneReport]:
    """``prune-snr prune``: prune a checkpoint on the data it was trained on (unless ``cfg``, resolved, says
    otherwise); writes ``config.yaml``, ``pruned.pt``, ``report.json`` and ``kept_channels.png`` to ``out``."""
    from .plots import save_kept_channels

    payload = load_checkpoint(checkpoint)
    measurement = None
    if cfg.measurement is None:
        cfg, saw_val = plan_validation(cfg, payload, checkpoint)
    else:  # the measurement's split decides, and it says whether the backbone saw it; read once, handed on
        cfg = with_trained_data(cfg, payload, checkpoint)
        measurement = Measurement.load(cfg.measurement)
        saw_val = measurement.meta.get("backbone_saw_val")
    ctx = plan(
        build_from_checkpoint(payload), cfg, measurement=measurement, backbone_saw_val=saw_val, progress=progress
    )
    pruned, report = run(
        ctx,
        before_finetune=BEFORE_FINETUNE,
        after_finetune=AFTER_FINETUNE,
        out=out,
        resume=resume,
        config={"source": str(Path(checkpoint).resolve())},
    )
    save_kept_channels(report, Path(out) / "kept_channels.png")
    return pruned, report
