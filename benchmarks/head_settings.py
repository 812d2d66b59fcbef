"""Head training settings side by side: time, per-point head accuracy against 30 fixed epochs, and the decisions.

Every setting measures the same checkpoint on a warm feature cache (the backbone pass is shared; only heads and
fields run), so the seconds compare the heads alone; ``--train-per-class`` settings read fewer training images,
and the backbone pass that filled their own cache is shown beside them. The reference trains every head 30
fixed epochs at batch 1024, Adam lr 1e-3 (the measurement before early stopping). For each other setting the
script prints the max abs difference of per-point head accuracy (validation and test) against the reference,
the epochs the heads used, and how the decisions the heads feed moved: the measured cut (``--cut measured`` at
``--delta``), the measured allocation's layer ratios, and the per-filter SNR ranking (the fields weigh each
filter by its head's weights, so SNR moves with head training).

    python benchmarks/head_settings.py runs/demo/model.pt --out benchmarks/results/fmnist_vgg16_w025/head_settings.json
    python benchmarks/head_settings.py runs/effnet/model.pt --expanded --only 5 --out runs/effnet/head_settings.json
    python benchmarks/head_settings.py runs/demo/model.pt --only 5,9 \\
        --out runs/demo/head_settings_bf16.json  # bfloat16 heads
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import prune_snr
from prune_snr.atomic import atomic_save_json
from prune_snr.checkpoint import load_checkpoint
from prune_snr.data import build_dataset, hold_out
from prune_snr.errors import run_script
from prune_snr.measure import measure
from prune_snr.prune.allocation import layer_ratios
from prune_snr.prune.truncate import candidates, choose_cut
from prune_snr.train.loop import evaluate

#: name -> measure options; the first is the reference
SETTINGS = {
    "30 fixed epochs, batch 1024, lr 1e-3": dict(head_patience=0, head_batch_size=1024, head_lr=1e-3),
    "early stopping (patience 3), batch 1024, lr 1e-3": dict(
        head_patience=3, head_min_epochs=5, head_batch_size=1024, head_lr=1e-3
    ),
    "early stopping (patience 3), batch 4096, lr 4e-3": dict(
        head_patience=3, head_min_epochs=5, head_batch_size=4096, head_lr=4e-3
    ),
    "early stopping (patience 2), batch 4096, lr 4e-3": dict(
        head_patience=2, head_min_epochs=3, head_batch_size=4096, head_lr=4e-3
    ),
    "early stopping (patience 3), cap 10 epochs, lr 3e-3": dict(
        head_patience=3, head_min_epochs=3, head_epochs=10, head_lr=3e-3
    ),
    "early stopping (patience 3), cap 10 epochs, lr 1e-2": dict(
        head_patience=3, head_min_epochs=3, head_epochs=10, head_lr=1e-2
    ),
    "early stopping (patience 2), cap 6 epochs, lr 1e-2": dict(
        head_patience=2, head_min_epochs=3, head_epochs=6, head_lr=1e-2
    ),
    "early stopping (patience 3), cap 20 epochs, lr 1e-2": dict(
        head_patience=3, head_min_epochs=3, head_epochs=20, head_lr=1e-2
    ),
    "early stopping (patience 3), cap 10 epochs, lr 3e-2": dict(
        head_patience=3, head_min_epochs=3, head_epochs=10, head_lr=3e-2
    ),
    "the defaults (patience 3, cap 10 epochs, lr 1e-2) with bfloat16 heads": dict(
        head_patience=3, head_min_epochs=3, head_epochs=10, head_lr=1e-2, head_dtype="bfloat16"
    ),
    "early stopping, 2,000 training images per label": dict(
        head_patience=3, head_min_epochs=5, head_lr=1e-3, train_per_class=2000
    ),
    "early stopping, 1,000 training images per label": dict(
        head_patience=3, head_min_epochs=5, head_lr=1e-3, train_per_class=1000
    ),
}


def decisions(result, full_val: float, num_classes: int, delta: float) -> dict:
    vals = result.val_accuracies()
    return {
        "cut": choose_cut(candidates(result, full_val, delta)),
        "ratios": [round(float(r), 4) for r in layer_ratios(vals, num_classes, r_max=0.9)],
        "snr": {n: result.stats(n).snr.tolist() for n in result.fields},
    }


def snr_change(a: dict, b: dict) -> tuple[float, float, float]:
    """How far per-filter SNR moved (fields weigh filters by the head's weights, so they follow head training):
    max abs difference, the lowest per-layer Spearman correlation, and the lowest per-layer overlap of the top
    half of filters (what a 50 % SNR prune keeps)."""
    from scipy.stats import spearmanr

    diff, rho, overlap = 0.0, 1.0, 1.0
    for n in a:
        x, y = np.asarray(a[n]), np.asarray(b[n])
        diff = max(diff, float(np.max(np.abs(x - y))))
        if not np.allclose(x, y, rtol=0, atol=1e-6):
            rho = min(rho, float(spearmanr(x, y).statistic))
            k = max(1, len(x) // 2)
            overlap = min(overlap, len(set(np.argsort(-x)[:k]) & set(np.argsort(-y)[:k])) / k)
    return diff, rho, overlap


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--dataset")
    parser.add_argument("--delta", type=float, default=0.005)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--expanded", action="store_true", help="EfficientNet: also measure each MBConv's depthwise output"
    )
    parser.add_argument(
        "--only", help="comma-separated numbers of the settings to run besides the reference (1 = the first after it)"
    )
    args = parser.parse_args(argv)
    settings = dict(SETTINGS)
    if args.only:
        keep = {int(k) for k in args.only.split(",")} | {0}
        settings = {name: o for i, (name, o) in enumerate(SETTINGS.items()) if i in keep}

    payload = load_checkpoint(args.checkpoint)
    dataset = args.dataset or payload["config"]["train"]["dataset"]
    val_fraction = payload["config"]["train"].get("val_fraction") or 0.1
    model = prune_snr.load(args.checkpoint)
    val = hold_out(
        build_dataset(dataset, "train", augment=False, input_size=model.spec.get("input_size")), val_fraction
    )[1]
    full_val = evaluate(model, val, device=args.device)["accuracy"]
    num_classes = model.spec["num_classes"]
    # train_per_class -> seconds of the backbone pass that fills its cache (cold, unless cached before)
    feature_pass = {}
    for per_class in sorted({o.get("train_per_class") for o in settings.values()}, key=lambda v: v or 0):
        t = measure(
            model,
            dataset,
            val_fraction=val_fraction,
            head_epochs=1,
            device=args.device,
            save_fields="all",
            train_per_class=per_class,
            expanded=args.expanded,
        ).meta["timings"]
        feature_pass[per_class] = t["features_train_s"] + t["features_test_s"]
    rows = []
    for name, options in settings.items():
        t0 = time.perf_counter()
        result = measure(
            model,
            dataset,
            val_fraction=val_fraction,
            device=args.device,
            save_fields="all",
            expanded=args.expanded,
            **{"head_epochs": 30, **options},
        )
        seconds = time.perf_counter() - t0
        t = result.meta["timings"]
        rows.append(
            {
                "setting": name,
                "options": options,
                "seconds": seconds,
                "heads_s": t["heads_s"],
                "feature_pass_s": feature_pass[options.get("train_per_class")],
                "epochs_used": [p.get("head_epochs_used") for p in result.points],
                "val": [p["val_accuracy"] for p in result.points],
                "test": [p["test_accuracy"] for p in result.points],
                "decisions": decisions(result, full_val, num_classes, args.delta),
            }
        )
        print(f"{name}: heads {rows[-1]['heads_s']:.1f} s, epochs {rows[-1]['epochs_used']}", flush=True)
    ref = rows[0]
    print(
        f"\n{args.checkpoint} on {dataset}: full model val accuracy {full_val:.4f}; {torch.get_num_threads()} threads\n"
    )
    print(
        "| setting | feature pass s | heads s | x reference | epochs used (min-max) | max abs Δ val acc | "
        "max abs Δ test acc | cut | ratios | SNR ranking |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        dv = max(abs(a - b) for a, b in zip(r["val"], ref["val"]))
        dt = max(abs(a - b) for a, b in zip(r["test"], ref["test"]))
        d, rd = r["decisions"], ref["decisions"]
        ratio_diff = max(abs(a - b) for a, b in zip(d["ratios"], rd["ratios"]))
        snr_diff, rho, overlap = snr_change(rd["snr"], d["snr"])
        r.update(
            max_abs_val_diff=dv,
            max_abs_test_diff=dt,
            same_cut=d["cut"] == rd["cut"],
            max_ratio_diff=ratio_diff,
            max_abs_snr_diff=snr_diff,
            min_spearman=rho,
            min_top_half_overlap=overlap,
        )
        used = [e for e in r["epochs_used"] if e is not None] or [30]
        print(
            f"| {r['setting']} | {r['feature_pass_s']:.1f} | {r['heads_s']:.1f} | "
            f"{r['heads_s'] / ref['heads_s']:.2f} | {min(used)}-{max(used)} | {dv:.4f} | {dt:.4f} | "
            f"{d['cut']} ({'same' if r['same_cut'] else 'differs'}) | max Δ {ratio_diff:.4f} | "
            f"max Δ {snr_diff:.1f}, Spearman ≥ {rho:.3f}, top half kept ≥ {overlap:.0%} |"
        )
    atomic_save_json(
        Path(args.out),
        {
            "checkpoint": str(args.checkpoint),
            "dataset": dataset,
            "expanded": args.expanded,
            "full_val_accuracy": full_val,
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
