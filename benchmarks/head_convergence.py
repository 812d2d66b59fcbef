"""Are the measurement's heads converged? Each setting's heads against the optimum of the same problem.

For each point of a checkpoint's (warm) feature cache, the linear head of the measurement is trained by
``train_heads`` under each setting (30 fixed epochs at Adam lr 1e-3, the former default's cap and rate; today's default;
any ``--setting EPOCHS:LR``) on the training rows less the validation split, and compared with the optimum of
the same unregularized softmax regression, found by full-batch L-BFGS on the standardized rows
(``--lbfgs-iters`` iterations, strong Wolfe line search). Printed per point: training loss, validation loss
and validation accuracy of each. A head whose *training* loss is far above the optimum's is not converged;
the optimum's *validation* figures show where more fitting stops paying (wide points overfit).

    python benchmarks/head_convergence.py runs/demo/model.pt --points features.conv1,features.conv8,features.conv13 \\
        --json benchmarks/results/fmnist_vgg16_w025/head_convergence.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import prune_snr
from prune_snr import choices
from prune_snr.atomic import atomic_save_json
from prune_snr.checkpoint import load_checkpoint
from prune_snr.data import validation_split
from prune_snr.errors import run_script
from prune_snr.measure import measure
from prune_snr.measure.feed import Rows
from prune_snr.measure.heads import train_heads


def figures(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a raw-scale head on raw rows."""
    with torch.no_grad():
        logits = x @ weight.reshape(len(bias), -1).T + bias
        return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def optimum(x: torch.Tensor, y: torch.Tensor, num_classes: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unregularized softmax regression's optimum on standardized rows, folded back to the raw scale."""
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mean) / std
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=iters,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w.T + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = w.detach() / std
    return w_raw, b.detach() - w_raw @ mean


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--dataset")
    parser.add_argument(
        "--points", default="all", help="points to compare (comma-separated; heads train on all of the cache's)"
    )
    parser.add_argument("--setting", action="append", default=[], help="EPOCHS:LR, a further setting (repeatable)")
    parser.add_argument("--lbfgs-iters", type=int, default=300)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    payload = load_checkpoint(args.checkpoint)
    dataset = args.dataset or payload["config"]["train"]["dataset"]
    val_fraction = payload["config"]["train"].get("val_fraction") or 0.1
    model = prune_snr.load(args.checkpoint)
    m = measure(model, dataset, val_fraction=val_fraction, head_epochs=1, device="cpu")  # fills the cache
    folder = Path(m.meta["feature_cache"]) / "train"
    names = m.meta["options"]["points"]
    y_all = torch.from_numpy(np.load(folder / "targets.npy")).long()
    num_classes = m.meta["num_classes"]
    rest, val = (np.sort(r) for r in validation_split(y_all.numpy(), val_fraction))
    features = {n: np.load(folder / f"{i}.npy", mmap_mode="r") for i, n in enumerate(names)}
    settings = {
        "30 fixed epochs, lr 1e-3": dict(epochs=30, lr=1e-3, patience=0),
        f"default: cap {choices.HEAD_EPOCHS} epochs, lr {choices.HEAD_LR:g}, early stopping": dict(
            epochs=choices.HEAD_EPOCHS,
            lr=choices.HEAD_LR,
            patience=choices.HEAD_PATIENCE,
            min_epochs=choices.HEAD_MIN_EPOCHS,
        ),
    }
    for s in args.setting:
        epochs, lr = s.split(":")
        settings[f"cap {epochs} epochs, lr {lr}, early stopping"] = dict(
            epochs=int(epochs), lr=float(lr), patience=choices.HEAD_PATIENCE, min_epochs=choices.HEAD_MIN_EPOCHS
        )
    train_rows, val_rows = Rows(features, rest, y_all[rest]), Rows(features, val, y_all[val])
    heads, seconds = {}, {}
    for name, s in settings.items():
        t0 = time.perf_counter()
        heads[name] = train_heads(train_rows, {"val": val_rows}, num_classes=num_classes, **s)
        seconds[name] = time.perf_counter() - t0
    rows = []
    print(
        f"{args.checkpoint} on {dataset}: {len(rest)} training rows, {len(val)} validation rows; "
        f"{torch.get_num_threads()} threads"
    )
    print("| point | features | setting | train loss | val loss | val acc | epochs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in names if args.points == "all" else args.points.split(","):
        x = torch.from_numpy(np.asarray(features[n][rest]).reshape(len(rest), -1)).float()
        xv = torch.from_numpy(np.asarray(features[n][val]).reshape(len(val), -1)).float()
        y, yv = y_all[rest], y_all[val]
        t0 = time.perf_counter()
        w, b = optimum(x, y, num_classes, args.lbfgs_iters)
        fits = {name: (heads[name][n].weight, heads[name][n].bias, heads[name][n].epochs_used) for name in settings}
        fits[f"optimum (L-BFGS, {args.lbfgs_iters} iterations)"] = (w, b, None)
        row = {"point": n, "features": x.shape[1], "lbfgs_s": time.perf_counter() - t0, "fits": {}}
        for name, (weight, bias, epochs) in fits.items():
            train_loss, _ = figures(x, y, weight, bias)
            val_loss, val_acc = figures(xv, yv, weight, bias)
            row["fits"][name] = {
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "epochs_used": epochs,
            }
            print(
                f"| {n} | {x.shape[1]} | {name} | {train_loss:.4f} | {val_loss:.4f} | "
                f"{val_acc:.4f} | {epochs or '-'} |",
                flush=True,
            )
        rows.append(row)
    print("heads seconds (all points): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    if args.json:
        atomic_save_json(
            Path(args.json),
            {
                "checkpoint": str(args.checkpoint),
                "dataset": dataset,
                "threads": torch.get_num_threads(),
                "lbfgs_iters": args.lbfgs_iters,
                "heads_s": seconds,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
