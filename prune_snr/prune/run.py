"""The runner of a pruning run: stages in order, fine-tuning between them, resume, timing and the report.

A stage is a function ``(ctx, model) -> (model, part)``: it reads the shared :class:`Context` and the
current model and returns the next model and its part of the :class:`PruneReport` (``{}`` when its
option is off). Fine-tuning is the one step the runner owns: it writes ``finetune.pt`` after every
epoch, so a resumed run (``--resume``) skips the stages before it and continues from there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from ..atomic import atomic_save_json, atomic_save_text
from ..checkpoint import build_from_checkpoint, into_instance, layer_widths, load_checkpoint, save_checkpoint
from ..config import dump_yaml, to_dict
from ..errors import ConfigError
from ..models.user_code import is_user_code
from ..runtime import loader_workers
from ..train import fine_tune, finetune_options
from .plan import Context
from .report import PruneReport, keep_better, kept_channels, options_part, sized_and_graded

PRUNED = "pruned.pt"
FINETUNE = "finetune.pt"
REPORT = "report.json"
CONFIG = "config.yaml"

Stage = Callable[[Context, nn.Module], tuple[nn.Module, dict]]


def run(
    ctx: Context,
    *,
    before_finetune: Sequence[Stage],
    after_finetune: Sequence[Stage],
    out: str | Path | None = None,
    resume: bool = False,
    config: dict | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Run ``before_finetune`` on ``ctx.original``, fine-tune, run ``after_finetune``; return the model and its report.

    With ``out``: writes ``config.yaml`` (the settled options) first, ``finetune.pt`` during fine-tuning, and at
    the end ``pruned.pt`` (carrying ``config`` and the report) and ``report.json``.

    Raises:
        ConfigError: ``out`` holds a run and ``resume`` is off, or the run there cannot resume with these options.
    """
    with loader_workers(ctx.cfg.workers):  # every stage's loaders
        return _run(
            ctx, before_finetune=before_finetune, after_finetune=after_finetune, out=out, resume=resume, config=config
        )


def _run(
    ctx: Context,
    *,
    before_finetune: Sequence[Stage],
    after_finetune: Sequence[Stage],
    out: str | Path | None,
    resume: bool,
    config: dict | None,
) -> tuple[nn.Module, PruneReport]:
    out = Path(out) if out else None
    checkpoint = out / FINETUNE if out else None
    if checkpoint and checkpoint.is_file() and not resume:
        raise ConfigError(
            f"{out} already holds a pruning run; pass --resume to continue its fine-tuning or choose another --out"
        )
    ctx.report = PruneReport(
        options=options_part(ctx.cfg, ctx.splits, backbone_saw_val=ctx.backbone_saw_val, callback=ctx.finetune)
    )
    resuming = bool(resume and checkpoint and checkpoint.is_file())
    ctx.out, ctx.resume = out, resume
    unfinetuned = None  # the pruned weights before fine-tuning, for --finetune-keep best
    if resuming:
        model, unfinetuned = _resume(ctx, checkpoint)
    if out:  # once the data, and a resumed run's checkpoint, are known good
        atomic_save_text(out / CONFIG, dump_yaml(ctx.cfg))
    if not resuming:
        model = _run_stages(ctx, ctx.original, before_finetune)
    payload = {"model": model.spec, "report": ctx.report.to_json(), "prune": to_dict(ctx.cfg), **(config or {})}
    model, part = fine_tune_stage(
        ctx, model, checkpoint=checkpoint, payload=payload, resume=resume, unfinetuned=unfinetuned
    )
    ctx.report.add(part)
    model = _run_stages(ctx, model, after_finetune)
    report = ctx.report
    report.add({"channels_after": kept_channels(model), "seconds": time.perf_counter() - ctx.started})
    payload["report"] = report.to_json()  # pruned.pt carries the final report (finetune.pt the one before fine-tuning)
    if out:
        save_checkpoint(
            out / PRUNED,
            {
                "kind": "pruned",
                "model": model.state_dict(),
                "pruning": ctx.history,
                "config": payload,
                "widths": layer_widths(model),
            },
        )
        atomic_save_json(out / REPORT, payload["report"])
    return model, report


def _run_stages(ctx: Context, model: nn.Module, stages: Sequence[Stage]) -> nn.Module:
    for stage in stages:
        model, part = stage(ctx, model)
        ctx.report.add(part)
    return model


def _resume(ctx: Context, checkpoint: Path) -> tuple[nn.Module, dict | None]:
    """The pruned model, history and report parts an interrupted run saved before fine-tuning, and its
    weights before fine-tuning (``--finetune-keep best``)."""
    state = load_checkpoint(checkpoint)
    # the grade before fine-tuning (which keep-best compares with) was taken at the saved run's setting
    saved = state["config"].get("prune", {}).get("bn_recalibrate")
    if saved is None:  # a run that recorded only what it read
        saved = (state["config"]["report"].get("bn_recalibration") or {}).get("batches", 0)
    if saved != ctx.cfg.bn_recalibrate:
        raise ConfigError(
            f"{checkpoint} was pruned with --bn-recalibrate {saved}; resume with that, or start again in another --out"
        )
    # a user's class is not rebuilt from its name (that would import their code): their instance is reshaped
    user_class = is_user_code(state["config"]["model"]["name"])
    model = into_instance(state, ctx.original) if user_class else build_from_checkpoint(state)
    ctx.history = state["pruning"]
    ctx.report = PruneReport.from_json(
        {**ctx.report.to_json(), **state["config"]["report"]}, options=ctx.report.options
    )
    unfinetuned = state.get("before_finetune")
    if _keeps_best(ctx) and unfinetuned is None:
        raise ConfigError(
            f"{checkpoint} was written without --finetune-keep best, so the weights before fine-tuning are gone; "
            "resume without it, or start again in another --out"
        )
    return model, unfinetuned


def _fine_tunes(ctx: Context) -> bool:
    """Whether this run fine-tunes: the built-in loop for 1 or more epochs, or the user's ``finetune=``."""
    return ctx.cfg.finetune.epochs > 0 or ctx.finetune is not None


def _keeps_best(ctx: Context) -> bool:
    return ctx.cfg.finetune.keep == "best" and _fine_tunes(ctx)


def _user_finetune(finetune, model: nn.Module) -> nn.Module:
    """The user's fine-tuning step: it may train ``model`` in place (and return None) or return the model to keep."""
    result = finetune(model)
    if result is None:
        return model
    if not isinstance(result, nn.Module):
        raise ConfigError(
            f"finetune= returned a {type(result).__name__}; return the fine-tuned nn.Module, or None after "
            "training the model in place"
        )
    return result


def fine_tune_stage(
    ctx: Context, model: nn.Module, *, checkpoint: Path | None, payload: dict, resume: bool, unfinetuned: dict | None
) -> tuple[nn.Module, dict]:
    """Fine-tune ``model`` (checkpointed in ``checkpoint`` with ``payload`` as its config), grade it, and with
    ``--finetune-keep best`` undo fine-tuning that lowered validation accuracy (:func:`keep_better`)."""
    cfg = ctx.cfg
    keep_best = _keeps_best(ctx)
    if keep_best and unfinetuned is None:
        unfinetuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if ctx.finetune is not None:
        model = _user_finetune(ctx.finetune, model)
    else:
        opts = finetune_options(cfg.finetune, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, amp=cfg.amp)
        fine_tune(
            model,
            ctx.splits.train,
            ctx.splits.test,
            opts,
            fraction=cfg.finetune.fraction,
            checkpoint=checkpoint,
            checkpoint_extra={
                "kind": "pruned",
                "config": payload,
                "pruning": ctx.history,
                **({"before_finetune": unfinetuned} if keep_best else {}),
            },
            resume=resume,
            teacher=ctx.original if cfg.finetune.distill else None,
            progress=ctx.progress,
        )
    model = model.cpu().eval()
    graded = ctx.report.get("pruned_before_finetune")
    # untouched since it was graded (no fine-tuning, not resumed: a resumed model may be fine-tuned): grading it
    # again would only repeat a pass over validation and test
    untouched = graded is not None and not resume and not _fine_tunes(ctx)
    after = dict(graded) if untouched else sized_and_graded(model, ctx.splits, cfg.device)
    if not keep_best:
        return model, {"after": after}
    return model, keep_better(model, unfinetuned, before=graded, after=after)
