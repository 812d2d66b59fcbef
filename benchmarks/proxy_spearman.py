"""Is the one-shot accuracy a proxy for search? Spearman's rho between it and the accuracy after fine-tuning.

Draws ``--configs`` configurations from the search space (``--space``; the target drawn in
``--removed``, a fraction of the MACs removed, seeded random sampling) and prunes the model once per
configuration with ``bn_recalibrate=--batches`` and ``--epochs`` fine-tuning epochs (keeping the last).
One run gives both numbers: BatchNorm recalibration leaves the weights as they were, and fine-tuning
in train mode reads batch statistics, so the fine-tuned model is the one the run would give without it.
The proxy is the validation accuracy right after pruning (``pruned_before_finetune``), the answer the
validation accuracy after fine-tuning; Spearman's rho on validation (what a search reads) and on test,
and the same without the recalibration (the accuracy a search's trial had before it).
Rows accumulate in ``--out``/rows.json, so a rerun continues where it stopped.

    python benchmarks/proxy_spearman.py runs/demo/model.pt --measurement runs/demo/measurement \\
        --configs 20 --out benchmarks/results/proxy/vgg16_w025
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, floats, load_results, load_run, machine_line, save_results, script_parser  # noqa: E402


def configurations(n: int, *, space: str, removed: tuple[float, float], seed: int) -> list[dict]:
    """``n`` configurations drawn as a search's random sampler would, the target in ``removed``; no fine-tuning
    parameters (every configuration gets the same fine-tuning)."""
    import optuna

    from prune_snr.search.study import space_of, suggest

    parameters = {k: v for k, v in space_of(space).items() if k not in ("finetune_epochs", "finetune_lr")}
    parameters["target"] = ("float", removed)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        drawn.append({name: suggest(trial, name, {}, 0, parameters) for name in parameters})
    return drawn


def spearman(rows: list[dict], proxy: str, answer: str) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr([r[proxy] for r in rows], [r[answer] for r in rows]).statistic)


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint")
    parser.add_argument(
        "--measurement", help="a prune-snr measure folder of the checkpoint (measured criteria, allocation, cut)"
    )
    parser.add_argument("--configs", type=int, default=20)
    parser.add_argument("--removed", default="0.5,0.9", help="range of the MACs fraction removed")
    parser.add_argument("--space", default="full")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of the answer")
    parser.add_argument("--batches", type=int, default=50, help="BatchNorm recalibration batches of the proxy")
    parser.add_argument("--seed", type=int, default=0)
    add_standard(parser, "out")
    args = parser.parse_args(argv)
    import prune_snr
    from prune_snr.errors import PruneSnrError

    out = Path(args.out)
    results = load_results(out / "rows.json", {"rows": []})
    run = load_run(args.checkpoint, args.measurement)
    model = prune_snr.load(args.checkpoint)
    drawn = configurations(args.configs, space=args.space, removed=tuple(floats(args.removed)), seed=args.seed)
    draw = {
        "space": args.space,
        "removed": args.removed,
        "seed": args.seed,
        "epochs": args.epochs,
        "batches": args.batches,
    }
    if results["rows"] and results.get("draw") != draw:  # rows are resumed by index: only the same draw continues
        raise SystemExit(f"error: {out / 'rows.json'} holds a run of {results.get('draw')}; use another --out")
    results["draw"] = draw
    command = "python benchmarks/proxy_spearman.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for i, config in enumerate(drawn):
        if i < len(results["rows"]):
            continue
        started = time.perf_counter()
        try:
            _, report = prune_snr.prune(
                model,
                run.dataset,
                data_dir=run.data_dir,
                measurement=run.measurement,
                metric="macs",
                finetune_epochs=args.epochs,
                finetune_keep="last",
                bn_recalibrate=args.batches,
                seed=args.seed + i,
                **config,
            )
            mid, after = report["pruned_before_finetune"], report["after"]
            row = {
                "config": config,
                "macs_kept": after["macs"] / report["before"]["macs"],
                "params_kept": after["params"] / report["before"]["params"],
                "proxy_val": mid["val_accuracy"],
                "proxy_test": mid["accuracy"],
                "without_val": report["bn_recalibration"]["without"]["val_accuracy"],
                "val": after["val_accuracy"],
                "test": after["accuracy"],
                "seconds": time.perf_counter() - started,
            }
        except PruneSnrError as exc:
            row = {"config": config, "error": str(exc)}
        results["rows"].append(row)
        results.update(machine=machine_line(), command=command)
        save_results(out / "rows.json", results)
        shown = row.get("error") or f"one-shot {row['proxy_val']:.4f} -> fine-tuned {row['val']:.4f}"
        print(f"[{i + 1}/{len(drawn)}] {shown}", flush=True)
    ok = [r for r in results["rows"] if "error" not in r]
    if len(ok) >= 3:
        lines = [
            f"{len(ok)} configurations ({len(results['rows']) - len(ok)} refused), {args.removed} of the MACs removed, "
            f"{args.epochs} fine-tuning epochs",
            f"Spearman rho, one-shot (BatchNorm on {args.batches} batches) vs fine-tuned: validation "
            f"{spearman(ok, 'proxy_val', 'val'):.3f}, test {spearman(ok, 'proxy_test', 'test'):.3f}",
            "Spearman rho, one-shot without recalibration vs fine-tuned (validation): "
            f"{spearman(ok, 'without_val', 'val'):.3f}",
        ]
        lines.append(f"seconds per configuration, pruned and fine-tuned: {sum(r['seconds'] for r in ok) / len(ok):.0f}")
        text = "\n".join(lines)
        (out / "summary.md").write_text(f"{text}\n\nMachine: {results['machine']}\nCommand: {command}\n")
        print(text)
    return 0


if __name__ == "__main__":
    from prune_snr.errors import run_script

    sys.exit(run_script(main))
