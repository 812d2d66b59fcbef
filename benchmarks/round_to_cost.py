"""Accuracy cost of channel alignment (``--round-to``): the same prune + fine-tune with and without it.

Every cell prunes the same checkpoint to remove ``--target`` of its MACs with prune's defaults
(criterion, allocation, measurement), differing only in ``round_to``, then fine-tunes for
``--finetune-epochs`` with each seed (the same seeds in every cell). Prints test accuracy
(mean ± std), params, MACs and the difference, called significant only beyond twice the pooled
seed std. Resumable: finished cells are read back from ``--out``.

    python benchmarks/round_to_cost.py runs/fm/model.pt --measurement runs/fm/measurement \\
        --out benchmarks/results/fmnist_vgg16_w025/round_to_cost.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import prune_snr
from prune_snr.errors import run_script
from prune_snr.prune import prune
from prune_snr.prune.target import default_round_to

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, load_results, load_run, save_results, script_parser  # noqa: E402


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint", "measurement", "target")
    parser.add_argument(
        "--round-to", default="1,default", help="values to compare; default = prune's default on this machine"
    )
    add_standard(parser, "seeds")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--keep", help="folder for each cell's pruned.pt and report.json")
    add_standard(parser, "out")
    args = parser.parse_args(argv)

    out = Path(args.out)
    results = load_results(out, {"cells": {}})
    run = load_run(args.checkpoint, args.measurement)
    dataset, measurement = run.dataset, run.measurement
    for value in args.round_to.split(","):
        for seed in args.seeds.split(","):
            key = f"round_to={default_round_to() if value == 'default' else value}|seed={seed}"
            if key in results["cells"]:
                continue
            _, report = prune(
                prune_snr.load(args.checkpoint),
                dataset,
                target=args.target,
                metric="macs",
                round_to=default_round_to() if value == "default" else int(value),
                measurement=measurement,
                finetune_epochs=args.finetune_epochs,
                bn_recalibrate=0,  # the cells' grade before fine-tuning is the model as pruned
                seed=int(seed),
                device="cpu",
                out=Path(args.keep) / f"round_to_{key.split('|')[0].split('=')[1]}_seed_{seed}" if args.keep else None,
                resume=True,
            )
            results["cells"][key] = {
                k: report[k] for k in ("after", "pruned_before_finetune", "before", "channels_after")
            }
            save_results(
                out,
                {
                    **results,
                    "target_macs_removed": args.target,
                    "finetune_epochs": args.finetune_epochs,
                    "checkpoint": args.checkpoint,
                    "split": "test",
                },
            )
            print(f"{key}: test accuracy {report['after']['accuracy']:.4f}", flush=True)
    rows = {}
    for key, cell in results["cells"].items():
        rows.setdefault(key.split("|")[0], []).append(cell)
    print("| round_to | seeds | test accuracy | params | MACs |\n|---|---|---|---|---|")
    stats = {}
    for value, cells in rows.items():
        accs = [c["after"]["accuracy"] for c in cells]
        stats[value] = (statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0, len(accs))
        print(
            f"| {value.split('=')[1]} | {len(accs)} | {stats[value][0]:.4f} ± {stats[value][1]:.4f} | "
            f"{cells[0]['after']['params']:,} | {cells[0]['after']['macs']:,} |"
        )
    base = stats.get("round_to=1")
    for value, (b, sb, _) in stats.items():
        if base and value != "round_to=1":
            a, sa, _ = base
            pooled = ((sa**2 + sb**2) / 2) ** 0.5
            verdict = "significant" if abs(b - a) > 2 * pooled else "no significant difference"
            print(
                f"{value} vs round_to=1: {100 * (b - a):+.2f} points (2 x pooled std = {200 * pooled:.2f}): {verdict}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
