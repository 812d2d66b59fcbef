"""The same study with 1 and 2 worker processes on one PostgreSQL database: wall time, trials per minute, speed-up.

A throwaway PostgreSQL cluster is started for the run (``tests/postgres.py``: ``initdb`` + ``pg_ctl``,
as the postgres user under root) unless ``--storage-base`` names a server; each arm gets its own
database. Every worker is a ``prune-snr search`` process with ``OMP_NUM_THREADS=1`` on the same
checkpoint and saved measurement, with the same pinned options (``--fix``), so the arms differ only
in the number of workers. Without a checkpoint a tiny VGG-16 (width 1/8, synthetic data, 3
epochs) is trained first; that is what the default run times.

    python benchmarks/search_workers.py --trials 8 --workers 1,2 --out /tmp/search_workers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/postgres.py: the throwaway cluster

from prune_snr.atomic import atomic_save_json  # noqa: E402
from prune_snr.errors import run_script  # noqa: E402
from prune_snr.search import counted_trials  # noqa: E402


def cli(*args, env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prune_snr.cli", *map(str, args)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"prune-snr {args[0]} failed: {done.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", help="model.pt (default: train the tiny VGG-16 into OUT/tiny)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts, one arm each")
    ap.add_argument("--fix", default="truncate=false,target=0.4,finetune_epochs=1,criterion=snr,allocation=uniform")
    ap.add_argument("--out", type=Path, default=Path("/tmp/search_workers"))
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRUNE_SNR_CACHE": str(args.out / "cache")}
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else args.out / "tiny" / "model.pt"
    if not checkpoint.is_file():
        cli(
            "train",
            "--dataset",
            "synthetic",
            "--width-mult",
            "0.125",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--out",
            checkpoint.parent,
            env=env,
        )
    measurement = args.out / "measurement"
    if not (measurement / "measurement.json").is_file():
        cli("measure", checkpoint, "--head-epochs", "3", "--device", "cpu", "--no-plots", "--out", measurement, env=env)
    from tests.postgres import throwaway_cluster

    rows = []
    with throwaway_cluster() as pg:
        for k in (int(x) for x in args.workers.split(",")):
            url = pg.create_database(f"workers{k}_{int(time.time())}")
            out = args.out / f"w{k}"
            cmd = [
                sys.executable,
                "-m",
                "prune_snr.cli",
                "search",
                str(checkpoint),
                "--trials",
                str(args.trials),
                "--storage",
                url,
                "--max-finetune-epochs",
                "1",
                "--fix",
                args.fix,
                "--round-to",
                "1",
                "--measurement",
                str(measurement),
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
            t0 = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [*cmd, "--worker-index", str(i)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(k)
            ]
            errors = [p.communicate()[1] for p in procs]
            wall = time.perf_counter() - t0
            if any(p.returncode for p in procs):
                raise SystemExit(f"a worker failed: {[e[-1500:] for e in errors]}")
            study = optuna.load_study(study_name="prune-snr", storage=url)
            rows.append(
                {
                    "workers": k,
                    "wall_s": round(wall, 1),
                    "trials_per_min": round(60 * args.trials / wall, 2),
                    "counted": len(counted_trials(study)),
                    "all_trials": len(study.trials),
                    "surplus": sum(1 for t in study.trials if t.user_attrs.get("surplus")),
                }
            )
    for row in rows:
        row["speedup"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
    cores = os.cpu_count()
    print(
        f"{args.trials}-trial study ({args.fix}), tiny VGG-16 w/8 on synthetic data, PostgreSQL (throwaway), "
        f"{cores} CPU cores, OMP_NUM_THREADS=1 per worker"
    )
    print(
        f"{'workers':>7} {'wall s':>8} {'trials/min':>10} {'speed-up':>8} {'counted':>7} "
        f"{'all trials':>10} {'surplus':>7}"
    )
    for r in rows:
        print(
            f"{r['workers']:>7} {r['wall_s']:>8.1f} {r['trials_per_min']:>10.2f} {r['speedup']:>8.2f} "
            f"{r['counted']:>7} {r['all_trials']:>10} {r['surplus']:>7}"
        )
    with contextlib.suppress(OSError):
        atomic_save_json(
            args.out / "search_workers.json", {"trials": args.trials, "fix": args.fix, "cpu_count": cores, "rows": rows}
        )
    print(
        f"load average {os.getloadavg()[0]:.1f} at the end: K workers speed a study up at most min(K, idle cores) "
        "times, less each worker's start (imports, checkpoint, ~8 s here) and the wait for the last running trials"
    )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
