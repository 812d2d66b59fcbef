"""Naive measurement vs prune-snr's, side by side in one run, on a reduced setting.

Naive = what a direct reading of METHOD.md does: for every point, train its head by re-running
the backbone over the training images every head epoch, then get each filter's field matrix by
silencing all other filters' head weights and re-running the backbone over the test images.
prune-snr = one hooked backbone pass per split, all heads on cached features, one einsum per
layer. Both train the heads identically (zero init, Adam, cosine, same batches), so their
accuracies should agree; the script prints the speed ratio and the accuracy/field differences.

    python benchmarks/measure_speed.py runs/demo/model.pt --dataset fashion-mnist

``--stages`` prints instead, side by side in one run, what each stage of ``measure`` costs as a multiple of
one plain inference pass over the same images (train + test): the feature pass, the heads (with the epochs
they used), the fields and each label-sweep K, once with early stopping (``--head-patience``) and once with
fixed epochs (patience 0) from the same feature cache.

    python benchmarks/measure_speed.py runs/demo/model.pt --stages --head-epochs 30 --train-size 60000 \\
        --test-size 10000 --labels 3,5,10
    python benchmarks/measure_speed.py vgg16_full.pt --dataset synthetic:100 --stages --points all --head-epochs 10 \\
        --head-dtypes float32,bfloat16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Subset

import prune_snr
from prune_snr import choices
from prune_snr.data import build_dataset
from prune_snr.errors import run_script
from prune_snr.measure import measure
from prune_snr.measure.features import extract
from prune_snr.measure.feed import Moments
from prune_snr.runtime import cpu_channels_last, first_image


def subset(ds, n, seed):
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    sub = Subset(ds, idx.tolist())
    sub.classes, sub.targets = ds.classes, ds.targets[idx]
    return sub


def pooled(model, loader, point, pool):
    """Generator over (pooled features N x C*p*p, labels): one full backbone pass."""
    store = {}
    handle = dict(model.named_modules())[point].register_forward_hook(lambda m, i, o: store.update(x=o))
    try:
        with cpu_channels_last(model, first_image(loader.dataset)):  # the layout the tool's feature pass runs in
            for x, y in loader:
                with torch.no_grad():  # only the backbone: the caller may train a head on what is yielded
                    model(x)
                    features = F.adaptive_avg_pool2d(store["x"].float(), pool).flatten(1)
                yield features, y
    finally:
        handle.remove()


def naive(model, train_set, test_set, points, *, pool, epochs, lr, batch_size, seed, num_classes):
    results = {}
    train_loader_eval = torch.utils.data.DataLoader(train_set, batch_size=8192)  # train_heads' chunks
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1024)
    for point in points:
        moments = Moments()  # standardisation statistics: one pass, merged as train_heads merges them
        for x, _ in pooled(model, train_loader_eval, point, pool):
            moments.add(x)
        mean, std = moments.finish()
        w = torch.zeros(num_classes, len(mean), requires_grad=True)
        b = torch.zeros(num_classes, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
        # train_heads' mini-batches: one seeded shuffle cut into ceil(n / batch_size) batches, visited in a new order
        # each epoch
        shuffle = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
        batches = [
            shuffle[part].tolist()
            for part in torch.arange(len(train_set)).tensor_split(-(-len(train_set) // batch_size))
        ]
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(batches))
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):  # the backbone runs again every head epoch
            visit = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
            loader = torch.utils.data.DataLoader(train_set, batch_sampler=visit)
            for x, y in pooled(model, loader, point, pool):
                opt.zero_grad()
                F.cross_entropy(torch.addmm(b, (x - mean) / std, w.t()), y).backward()
                opt.step()
                sched.step()
        with torch.no_grad():
            w_raw, b_raw = w / std, b - (w / std) @ mean
            correct = sum(
                (torch.addmm(b_raw, x, w_raw.t()).argmax(1) == y).sum().item()
                for x, y in pooled(model, test_loader, point, pool)
            )
            C = w_raw.shape[1] // (pool * pool)
            w3 = w_raw.view(num_classes, C, pool * pool)
            fields = []
            for f in range(C):  # the backbone runs again for every filter
                silenced = torch.zeros_like(w3)
                silenced[:, f] = w3[:, f]
                sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
                counts = torch.zeros(num_classes)
                for x, y in pooled(model, test_loader, point, pool):
                    sums.index_add_(0, y, (x @ silenced.flatten(1).t()).double())
                    counts += torch.bincount(y, minlength=num_classes)
                fields.append((sums / counts[:, None]).float())
        results[point] = {"accuracy": correct / len(test_set), "M": torch.stack(fields).numpy()}
    return results


def plain_pass(model, datasets, batch_size: int) -> float:
    """Seconds of one inference pass over ``datasets`` (no hooks, no pooling), in the feature pass's layout."""
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), cpu_channels_last(model, first_image(datasets[0])):
        for ds in datasets:
            for x, _ in torch.utils.data.DataLoader(ds, batch_size=batch_size):
                model(x)
    return time.perf_counter() - t0


def interleaved(model, datasets, points: list[str], pool: int, parts: int = 8) -> tuple[float, float]:
    """Seconds of plain passes and of feature passes (``extract``, cache written) over the same parts of ``datasets``,
    alternating part by part and which goes first, so a drift of the machine's speed falls on both alike."""
    plain = features = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for d, ds in enumerate(datasets):
            for i, index in enumerate(torch.arange(len(ds)).tensor_split(parts)):
                part, folder = Subset(ds, index.tolist()), Path(tmp) / f"{d}_{i}"
                for run in (0, 1) if i % 2 == 0 else (1, 0):
                    t0 = time.perf_counter()
                    if run == 0:
                        plain_pass(model, (part,), 256)
                        plain += time.perf_counter() - t0
                    else:
                        extract(model, part, points, pool=pool, folder=folder, batch_size=256)
                        features += time.perf_counter() - t0
                shutil.rmtree(folder)
    return plain, features


def stages(model, train_set, test_set, args) -> dict:
    """Each stage of ``measure`` as a multiple of one plain pass, with and without early stopping."""
    # the plain pass runs before and after the measurements and their mean is the unit: a drift of the machine's
    # speed during the run shows as the gap between the two and does not tilt the ratios one way
    before = plain_pass(model, (train_set, test_set), 256)
    print(f"plain inference pass (train + test), before: {before:.1f} s")
    labels = [int(k) for k in args.labels.split(",")] if args.labels else None
    figures, runs = {}, []
    with tempfile.TemporaryDirectory() as cache:
        dtypes = args.head_dtypes.split(",")
        # the first run fills the cache: its features are the cold pass; every other run reads them
        settings = (
            [(args.head_patience, dtypes[0])]
            + [(0, dtypes[0])] * (args.head_patience > 0)
            + [(args.head_patience, d) for d in dtypes[1:]]
        )
        for run_index, (patience, dtype) in enumerate(settings):
            m = measure(
                model,
                (train_set, test_set),
                points=args.points,
                pool=args.pool,
                head_epochs=args.head_epochs,
                head_lr=args.head_lr,
                head_patience=patience,
                head_min_epochs=args.head_min_epochs,
                label_sweep=labels,
                seed=args.seed,
                device="cpu",
                cache_dir=cache,
                head_dtype=dtype,
            )
            t = m.meta["timings"]
            used = [p["head_epochs_used"] for p in m.points]
            rows = [
                ("features (train+test)", t["features_train_s"] + t["features_test_s"], ""),
                ("heads", t["heads_s"], f"epochs used {min(used)}..{max(used)} of {args.head_epochs}"),
                ("fields", t["heads_and_fields_s"] - t["heads_s"], ""),
            ]
            for run in m.label_sweep:
                K, u = run["labels"], [p["head_epochs_used"] for p in run["points"]]
                rows.append(
                    (
                        f"sweep K={K} (heads+fields)",
                        t[f"sweep_{K}_s"],
                        f"heads {t[f'sweep_{K}_heads_s']:.1f} s, epochs used {min(u)}..{max(u)}",
                    )
                )
            if run_index == 0:
                cold_features = t["features_train_s"] + t["features_test_s"]
            rows.append(("measure total", t["total_s"], "(features cached)" if run_index else ""))
            rows.append(
                (
                    "features (cold) + heads + fields",
                    cold_features + t["heads_and_fields_s"],
                    "the default measurement, no sweep",
                )
            )
            runs.append(
                (
                    f"-- head patience {patience} (min {args.head_min_epochs} epochs, cap "
                    f"{args.head_epochs}), {dtype} heads:",
                    rows,
                )
            )
            figures[f"patience_{patience}" + ("" if dtype == dtypes[0] else f"_{dtype}")] = {
                "timings": t,
                "val_accuracy": {p["name"]: p["val_accuracy"] for p in m.points},
                "test_accuracy": {p["name"]: p["test_accuracy"] for p in m.points},
                "epochs_used": {p["name"]: p["head_epochs_used"] for p in m.points},
            }
        after = plain_pass(model, (train_set, test_set), 256)
    plain = (before + after) / 2
    figures.update(plain_s=plain, plain_before_s=before, plain_after_s=after)
    print(f"plain inference pass (train + test), after: {after:.1f} s; their mean, the unit: {plain:.1f} s = 1.00x")
    for title, rows in runs:
        print(title)
        for name, seconds, note in rows:
            print(f"   {name:32} {seconds:7.1f} s  {seconds / plain:6.2f}x  {note}")
    names, parts = m.meta["options"]["points"], 8
    plain_parts, feature_parts = interleaved(model, (train_set, test_set), names, args.pool, parts)
    overhead = feature_parts / plain_parts
    figures.update(interleaved_plain_s=plain_parts, interleaved_features_s=feature_parts)
    print(
        f"feature pass vs plain pass, interleaved over {parts} parts of each split: {feature_parts:.1f} s vs "
        f"{plain_parts:.1f} s = {overhead:.2f}x"
    )
    for key in figures:
        if key.startswith("patience_"):
            t = figures[key]["timings"]
            whole = overhead + t["heads_and_fields_s"] / plain
            print(f"   {key}: interleaved feature pass + heads + fields = {whole:.2f}x")
            figures[key]["whole_interleaved_x"] = whole
    a, b = figures[f"patience_{args.head_patience}"], figures["patience_0"]
    if args.head_patience > 0:
        diff = max(abs(a["test_accuracy"][n] - b["test_accuracy"][n]) for n in a["test_accuracy"])
        print(
            f"max |test accuracy (patience {args.head_patience}) - test accuracy (fixed {args.head_epochs} epochs)| "
            f"over points: {100 * diff:.2f} points"
        )
    for dtype in dtypes[1:]:
        c = figures[f"patience_{args.head_patience}_{dtype}"]
        for split in ("val", "test"):
            d = max(abs(a[f"{split}_accuracy"][n] - c[f"{split}_accuracy"][n]) for n in a[f"{split}_accuracy"])
            print(
                f"max |{split} accuracy ({dtype} heads) - {split} accuracy ({dtypes[0]} heads)| over "
                f"points: {100 * d:.2f} points"
            )
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--points", default="features.conv1,features.conv4,features.conv7,features.conv10")
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--head-lr", type=float, default=choices.HEAD_LR)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--stages", action="store_true", help="stage costs as multiples of a plain pass instead of naive vs fast"
    )
    parser.add_argument("--labels", help="with --stages: label sweep, e.g. 3,5,10")
    parser.add_argument("--head-patience", type=int, default=3)
    parser.add_argument(
        "--head-dtypes",
        default="float32",
        help="with --stages: the heads' precisions to time, e.g. float32,bfloat16 (the first "
        "also runs with patience 0)",
    )
    parser.add_argument("--head-min-epochs", type=int, default=choices.HEAD_MIN_EPOCHS)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = prune_snr.load(args.checkpoint)
    size = model.spec["input_size"]
    train_set = subset(
        build_dataset(args.dataset, "train", args.data_dir, augment=False, input_size=size), args.train_size, args.seed
    )
    test_set = subset(
        build_dataset(args.dataset, "test", args.data_dir, augment=False, input_size=size), args.test_size, args.seed
    )
    points = args.points.split(",")
    num_classes = len(train_set.classes)
    if args.stages:
        if args.points == parser.get_default("points"):
            args.points = "all"
        print(
            f"setting: {args.checkpoint} on {args.dataset} (train {len(train_set)}, test {len(test_set)} images), "
            f"points {args.points}, p={args.pool}, {torch.get_num_threads()} CPU threads"
        )
        figures = stages(model, train_set, test_set, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"stages": figures, "args": vars(args)}, f, indent=2)
        return 0

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        fast = measure(
            model,
            (train_set, test_set),
            points=points,
            pool=args.pool,
            head_epochs=args.head_epochs,
            head_lr=args.head_lr,
            head_batch_size=256,
            seed=args.seed,
            device="cpu",
            cache_dir=cache,
            val_fraction=0,
            fields_split="test",
            save_fields="all",
        )
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = naive(
        model,
        train_set,
        test_set,
        points,
        pool=args.pool,
        epochs=args.head_epochs,
        lr=args.head_lr,
        batch_size=256,
        seed=args.seed,
        num_classes=num_classes,
    )
    t_naive = time.perf_counter() - t0

    print(
        f"setting: {args.checkpoint} on {args.dataset} (train {len(train_set)}, test {len(test_set)} images), points "
        f"{points}, p={args.pool}, {args.head_epochs} head epochs, {torch.get_num_threads()} CPU threads"
    )
    print(f"{'point':18} {'filters':>7} {'acc naive':>9} {'acc fast':>9} {'diff (pts)':>10} {'max |dM|/max|M|':>16}")
    rows = []
    for p in fast.points:
        s = slow[p["name"]]
        rel = float(np.abs(fast.fields[p["name"]] - s["M"]).max() / np.abs(s["M"]).max())
        diff = 100 * (p["test_accuracy"] - s["accuracy"])
        rows.append(
            {
                "point": p["name"],
                "filters": p["n_filters"],
                "acc_naive": s["accuracy"],
                "acc_fast": p["test_accuracy"],
                "diff_points": diff,
                "field_rel_diff": rel,
            }
        )
        print(
            f"{p['name']:18} {p['n_filters']:>7} {s['accuracy']:>9.4f} {p['test_accuracy']:>9.4f} "
            f"{diff:>10.2f} {rel:>16.2e}"
        )
    ratio = t_naive / t_fast
    print(
        f"naive {t_naive:.1f} s, prune-snr {t_fast:.1f} s: speed ratio {ratio:.1f}x; "
        f"max head-accuracy difference {max(abs(r['diff_points']) for r in rows):.2f} points"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"naive_s": t_naive, "fast_s": t_fast, "ratio": ratio, "rows": rows, "args": vars(args)}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
