"""``measure --workers N`` against ``--workers 0``, side by side in one run: the feature pass and the whole measurement.

Each round measures the checkpoint once per setting, in turns (so load from elsewhere hits both alike), each on a
fresh feature cache; the ratios are medians over rounds of the paired times. The measurements must agree (same
per-point accuracies): loader workers only move where images are decoded.

    python benchmarks/loader_workers.py runs/demo/model.pt --workers 0,2 --rounds 2 \\
        --out benchmarks/results/loader_workers.json
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, ints, machine_line, save_results, script_parser  # noqa: E402


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint", "device")
    parser.add_argument("--workers", default="0,2", help="the settings, the first one the reference")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--head-epochs", type=int, default=3)
    add_standard(parser, "out")
    args = parser.parse_args(argv)
    from prune_snr.config import MeasureConfig, resolve
    from prune_snr.measure.pipeline import measure_checkpoint

    settings = ints(args.workers)
    rows = []
    for r in range(args.rounds):
        for w in settings:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = resolve(
                    MeasureConfig, overrides={"workers": w, "device": args.device, "head_epochs": args.head_epochs}
                )
                os.environ["PRUNE_SNR_CACHE"] = str(Path(tmp) / "cache")  # a fresh feature cache per measurement
                m = measure_checkpoint(args.checkpoint, cfg, out=Path(tmp) / "m", plots=False)
                t = m.meta["timings"]
                rows.append(
                    {
                        "round": r,
                        "workers": w,
                        "features_s": t["features_train_s"] + t["features_test_s"],
                        "total_s": t["total_s"],
                        "accuracies": [p["test_accuracy"] for p in m.points],
                    }
                )
                print(
                    f"round {r} --workers {w}: features {rows[-1]['features_s']:.1f} s, "
                    f"measurement {t['total_s']:.1f} s",
                    flush=True,
                )
    ref = settings[0]
    ratios = {}
    for w in settings[1:]:
        pairs = [
            (a, b) for a in rows for b in rows if a["round"] == b["round"] and a["workers"] == w and b["workers"] == ref
        ]
        ratios[w] = {k: statistics.median(a[k] / b[k] for a, b in pairs) for k in ("features_s", "total_s")}
        ratios[w]["same_accuracies"] = all(a["accuracies"] == b["accuracies"] for a, b in pairs)
        print(
            f"--workers {w} / --workers {ref}: feature pass {ratios[w]['features_s']:.2f}x, whole measurement "
            f"{ratios[w]['total_s']:.2f}x, same accuracies: {ratios[w]['same_accuracies']}"
        )
    command = "python benchmarks/loader_workers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    save_results(
        args.out,
        {"machine": machine_line(), "command": command, "rows": rows, "ratios": {str(k): v for k, v in ratios.items()}},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
