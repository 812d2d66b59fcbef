"""The heads' three feeds give the same heads on this device: rows held on the device, rows held in host memory
and copied a pinned chunk at a time (what a GPU too small for them gets), and rows streamed from the cache.

A GPU run's first check (``gpu_paper.sh``): the host-held path is the one only a GPU takes, and only when its free
memory is short, so it is forced here on generated features. Writes the largest weight difference against the
device-held heads, the seconds of each feed and, on CUDA, the peak of page-locked host memory; exits 1 when a feed's
heads differ (weights beyond 1e-4 of the largest, an accuracy by more than 0.002: a GPU's kernels may round a
strided and a contiguous batch differently).

    python benchmarks/heads_feed_check.py --device cuda --out runs/gpu_paper/heads_feed.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import save_results, script_parser  # noqa: E402


def cache(folder: Path, *, rows: int, labels: int, seed: int = 0) -> tuple[dict, object]:
    """Three memory-mapped points whose features carry the label, as a feature cache holds them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, labels, rows)
    features = {}
    for i, channels in enumerate((64, 128, 256)):
        x = rng.standard_normal((rows, channels, 4)).astype(np.float16)
        x[np.arange(rows), y % channels, :] += 1.0 + i
        np.save(folder / f"p{i}.npy", x)
        features[f"p{i}"] = np.load(folder / f"p{i}.npy", mmap_mode="r")
    return features, y


def check(*, device: str, rows: int, labels: int, epochs: int) -> dict:
    import numpy as np
    import torch

    from prune_snr.measure import feed
    from prune_snr.measure.feed import Rows
    from prune_snr.measure.heads import train_heads
    from prune_snr.runtime import resolve_device

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        features, y = cache(Path(tmp), rows=rows, labels=labels)
        cut = rows * 5 // 6
        index = np.arange(rows)
        train = Rows(features, index[:cut], torch.from_numpy(y[:cut]))
        val = Rows(features, index[cut:], torch.from_numpy(y[cut:]))
        fits = feed._fits_device
        train_heads(
            train, {}, num_classes=labels, epochs=1, batch_size=512, device=dev
        )  # warm-up (CUDA, cuBLAS): untimed
        results, seconds = {}, {}
        for name, in_memory, on_device in (("device", True, True), ("host", True, False), ("streamed", False, True)):
            feed._fits_device = fits if on_device else (lambda nbytes, device: False)
            try:
                started = time.perf_counter()
                results[name] = train_heads(
                    train, {"val": val}, num_classes=labels, epochs=epochs, batch_size=512, device=dev,
                    in_memory=in_memory, memory_budget=64 << 20,
                )  # fmt: skip
                seconds[name] = time.perf_counter() - started
            finally:
                feed._fits_device = fits
    reference = results["device"]
    report = {"device": str(dev), "rows": rows, "labels": labels, "epochs": epochs, "seconds": seconds, "feeds": {}}
    for name, heads in results.items():
        diff = max(float((heads[p].weight - reference[p].weight).abs().max()) for p in heads)
        scale = max(float(reference[p].weight.abs().max()) for p in heads)
        accuracy = max(
            abs(heads[p].accuracies[k] - reference[p].accuracies[k]) for p in heads for k in reference[p].accuracies
        )
        report["feeds"][name] = {"max_weight_diff": diff, "relative": diff / scale, "max_accuracy_diff": accuracy}
    if dev.type == "cuda":
        stats = torch.cuda.host_memory_stats()  # after the last group released its page-locked chunks
        report["pinned_bytes"] = {k: stats.get(f"allocated_bytes.{k}") for k in ("peak", "current")}
    report["ok"] = all(f["relative"] <= 1e-4 and f["max_accuracy_diff"] <= 0.002 for f in report["feeds"].values())
    return report


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report = check(device=args.device, rows=args.rows, labels=args.labels, epochs=args.epochs)
    save_results(args.out, report)
    for name, f in report["feeds"].items():
        print(f"{name:>8}: {report['seconds'][name]:.1f} s, max weight diff {f['max_weight_diff']:.2e}, "
              f"max accuracy diff {f['max_accuracy_diff']:.4f}")  # fmt: skip
    if not report["ok"]:
        sys.exit("error: the heads' feeds disagree on this device (see the JSON)")


if __name__ == "__main__":
    main()
