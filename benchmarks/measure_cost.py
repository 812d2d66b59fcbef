"""What the measurement costs, in plain inference passes over the same images, timed side by side in one process.

A plain no-grad pass over the checkpoint's training and test splits with the measurement's loader (batch 256),
then ``prune_snr.measure`` at its defaults on a fresh feature cache, without a label sweep and then with
``--labels``, then a second plain pass. The plain pass drifts within a process, so the
ratio is given against each of the three denominators (the pass before, the pass after, their mean) and the
spread between them is the figure's own noise.

    python benchmarks/measure_cost.py runs/demo/model.pt --labels 3,5,10 \\
        --out benchmarks/results/fmnist_vgg16_w025/measure_cost.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, machine_line, save_results, script_parser  # noqa: E402


def plain_pass(model, dataset: str, size) -> float:
    import torch

    from prune_snr.data import build_dataset
    from prune_snr.runtime import cpu_channels_last, first_image, make_loader

    seconds = 0.0
    for split in ("train", "test"):
        images = build_dataset(dataset, split, augment=False, input_size=size)
        started = time.perf_counter()
        with torch.no_grad(), cpu_channels_last(model, first_image(images)):  # the layout the feature pass runs in
            for x, _ in make_loader(images, batch_size=256, shuffle=False):
                model(x)
        seconds += time.perf_counter() - started
    return seconds


def ratios(seconds: float, before: float, after: float) -> dict:
    return {"before": seconds / before, "mean": seconds / ((before + after) / 2), "after": seconds / after}


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint")
    parser.add_argument("--labels", default="3,5,10", help="label sweep of the second measurement")
    add_standard(parser, "out")
    args = parser.parse_args(argv)
    import torch

    import prune_snr
    from prune_snr.measure import measure

    payload = torch.load(args.checkpoint, weights_only=True, map_location="cpu")
    dataset, val_fraction = (
        payload["config"]["train"]["dataset"],
        payload["config"]["train"].get("val_fraction") or None,
    )
    model = prune_snr.load(args.checkpoint).eval()
    size = model.spec.get("input_size")
    before = plain_pass(model, dataset, size)
    timed = {}
    for name, sweep in (("measure", None), ("measure_with_sweep", [int(k) for k in args.labels.split(",")])):
        with tempfile.TemporaryDirectory(prefix="measure-cost-") as cache:  # a fresh feature cache each
            started = time.perf_counter()
            m = measure(model, dataset, label_sweep=sweep, val_fraction=val_fraction, device="cpu", cache_dir=cache)
            timed[name] = {"seconds": time.perf_counter() - started, "timings": m.meta["timings"]}
    after = plain_pass(model, dataset, size)
    result = {
        "command": "python benchmarks/measure_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_line(),
        "plain_before_s": before,
        "plain_after_s": after,
        **{name: {**t, "plain_passes": ratios(t["seconds"], before, after)} for name, t in timed.items()},
    }
    print(f"plain pass {before:.1f} s before, {after:.1f} s after")
    for name, t in timed.items():
        r = result[name]["plain_passes"]
        print(
            f"{name}: {t['seconds']:.1f} s = {r['before']:.2f}x (the pass before), {r['mean']:.2f}x (their mean), "
            f"{r['after']:.2f}x (the pass after)"
        )
    save_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
