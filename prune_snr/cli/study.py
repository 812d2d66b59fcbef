"""The ``search`` command and ``pick``, which writes a trial of its study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..config import SearchConfig, resolve
from .base import console, progress_bar, user_errors
from .flags import takes


@takes(
    SearchConfig,
    include=("metric", "measurement", "round_to", "bn_recalibrate", "dataset", "data_dir", "seed", "device"),
    trust=True,
)
def search(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt written by prune-snr train.")],
    out: Annotated[Path, typer.Option("--out", help="Study folder: study.db, trials/, pareto.png.")] = ...,
    worker_index: Annotated[
        Optional[int],
        typer.Option(
            "--worker-index",
            help="This process's index when you start several workers on "
            "one --storage yourself: its own random stream.",
        ),
    ] = None,
    *,
    options: dict,
    recipe: Optional[Path] = None,
) -> None:
    """Multi-objective Optuna search (validation accuracy vs params/MACs/latency) over pruning configurations."""
    from ..search import run_search, run_workers

    with user_errors():
        cfg = resolve(SearchConfig, recipe, options)
        with progress_bar() as progress:
            if cfg.workers > 1:
                study = run_workers(checkpoint, cfg, out=out, workers=cfg.workers, progress=progress)
            else:
                study = run_search(checkpoint, cfg, out=out, progress=progress, worker=worker_index)
        _show_pareto(study, out)
        if cfg.workers > 1 and cfg.storage is None:
            console.print(f"dashboard: optuna-dashboard {(out / 'study.log').resolve()}  (binds 127.0.0.1:8080)")
        elif cfg.storage is None:
            console.print(
                f"dashboard: optuna-dashboard sqlite:///{(out / 'study.db').resolve()}  (binds 127.0.0.1:8080)"
            )
        if cfg.pick:
            _pick(study, cfg.pick, out)


@takes(SearchConfig, only=("storage", "study_name"), recipe=False)
def pick_cmd(
    out: Annotated[Path, typer.Argument(help="Study folder written by prune-snr search.")],
    rule: Annotated[str, typer.Option("--pick", help='Conditions, e.g. "params<=0.5,accuracy>=0.9".')],
    *,
    options: dict,
) -> None:
    """Write the most accurate Pareto trial meeting --pick to OUT/pruned.pt."""
    from ..search import load_study

    with user_errors():
        cfg = resolve(SearchConfig, None, options)
        _pick(load_study(out, cfg.storage, cfg.study_name), rule, out)


def _show_pareto(study, out: Path) -> None:
    from ..search import pareto_rows, save_pareto_plot

    rows = pareto_rows(study)
    table = Table(title=f"Pareto front of {study.study_name} ({len(study.trials)} trials; val decides, test grades)")
    proxied = any(r["full_accuracy"] is not None for r in rows)
    for col in (
        "#",
        "val (proxy)" if proxied else "val",
        "test (proxy)" if proxied else "test",
        *(["val (full)", "test (full)"] if proxied else []),
        "kept",
        "criterion",
        "alloc",
        "target",
        "θ",
        "ft",
        "trunc",
        "afcc",
    ):
        table.add_column(col, justify="right", no_wrap=True)

    def fmt(x):
        return "-" if x is None else f"{x:.4f}"

    for r in rows:
        full = [fmt(r["full_val_accuracy"]), fmt(r["full_accuracy"])] if proxied else []
        table.add_row(
            str(r["trial"]),
            fmt(r["val_accuracy"]),
            fmt(r["accuracy"]),
            *full,
            f"{r['kept']:.3f}",
            r["criterion"],
            r["allocation"],
            f"{r['target']:.2f}",
            str(r.get("threshold", "-")),
            str(r["finetune_epochs"]),
            "y" if r.get("truncate") else "n",
            "y" if r.get("afcc") else "n",
        )
    console.print(table)
    if rows:
        console.print(f"Pareto plot: {save_pareto_plot(study, out / 'pareto.png')}")


def _pick(study, rule: str, out: Path) -> None:
    from ..search import write_pick

    trial, chosen, target = write_pick(study, rule, out)
    console.print(
        f"picked trial {trial.number} (val accuracy {chosen['val_accuracy']:.4f}, test {chosen['accuracy']:.4f}, "
        f"kept {trial.values[1]:.3f}) -> {target}"
    )
