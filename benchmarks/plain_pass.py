"""One warm no-grad inference pass over exactly the images a measurement read, at its batch size: the
denominator of "measurement ÷ plain pass" (``gpu_paper.sh``).

The training images are those the measurement's feature pass read (``--train-per-class`` selects them,
seeded, beside the validation rows: the same selection, recomputed from the options it recorded), then
the test split; one untimed warm-up batch first (CUDA context, cuDNN plans). Prints and writes the seconds.

    python benchmarks/plain_pass.py RUN/model.pt RUN/measurement --data-dir .data --device cuda \\
        --out RUN/plain_pass.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import save_results, script_parser  # noqa: E402


def plain_pass(model_pt: str, measurement: str, *, data_dir: str | None, device: str) -> dict:
    import torch

    import prune_snr
    from prune_snr.data import DEFAULT_VAL_FRACTION, IndexSubset, build_dataset
    from prune_snr.measure.pipeline import plan_train_rows
    from prune_snr.measure.result import Measurement
    from prune_snr.runtime import autocast, cpu_channels_last, first_image, make_loader, resolve_device

    m = Measurement.load(measurement)
    cfg = m.config
    dev = resolve_device(device)
    model = prune_snr.load(model_pt).to(dev).eval()
    size = model.spec.get("input_size")
    train, test = (
        build_dataset(m.meta["dataset"], split, data_dir, augment=False, input_size=size) for split in ("train", "test")
    )
    read, _, _ = plan_train_rows(
        train.targets,
        val_fraction=DEFAULT_VAL_FRACTION if cfg.val_fraction is None else cfg.val_fraction,
        val_source=cfg.val_source or "train",
        per_class=cfg.train_per_class,
        seed=cfg.seed,
        split_seed=cfg.split_seed,
        pool=cfg.held_out,
    )
    sets = [train if read is None else IndexSubset(train, read), test]
    if "feature_rows" in m.meta and [len(s) for s in sets] != [m.meta["feature_rows"][k] for k in ("train", "test")]:
        raise SystemExit(
            f"error: {measurement} read {m.meta['feature_rows']} images, not these {[len(s) for s in sets]}: "
            "measure with this prune-snr and data"
        )
    batch, amp = cfg.batch_size, bool(cfg.amp) and dev.type == "cuda"
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.no_grad(), cpu_channels_last(model, first_image(test)):  # the feature pass's layout (CPU only)
        with autocast(dev, amp):
            model(next(iter(make_loader(test, batch_size=batch, shuffle=False)))[0].to(dev))
        sync()
        t0 = time.perf_counter()
        for ds in sets:
            for x, _ in make_loader(ds, batch_size=batch, shuffle=False):
                with autocast(dev, amp):
                    model(x.to(dev, non_blocking=True))
        sync()
    return {"seconds": time.perf_counter() - t0, "images": sum(len(s) for s in sets), "batch_size": batch}


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("measurement", help="the measure folder of that checkpoint")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="a JSON file")
    args = parser.parse_args(argv)
    result = plain_pass(args.checkpoint, args.measurement, data_dir=args.data_dir, device=args.device)
    save_results(Path(args.out), result)
    print(f"plain pass: {result['images']} images at batch {result['batch_size']} in {result['seconds']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
