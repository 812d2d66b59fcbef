"""The offline bundle for an air-gapped GPU node: the wheels prune-snr needs beyond what the node's image
has, for the node's Python, in ``.whl/``, and Fashion-MNIST's four IDX files in ``.data/``; the two folders
``benchmarks/gpu_paper.sh`` installs and reads.

The dependencies are prune-snr's, resolved from this environment's installed metadata at the versions
installed here (the tested ones: ``constraints.txt``), less those the node has: by default a plain CUDA
PyTorch image (torch, torchvision and everything they require, numpy and pillow); ``--have FILE`` takes the
node's own ``python3 -m pip list --format=freeze`` instead.

    python scripts/offline_bundle.py --python 3.12                      # or: make offline-bundle
    python scripts/offline_bundle.py --python 3.12 --have node-pip-list.txt --extra dev
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

#: What a plain CUDA PyTorch image holds besides torch's own requirements (pytorch/pytorch, NGC's PyTorch).
PLAIN_IMAGE = ("torch", "torchvision", "numpy", "pillow", "pip", "setuptools", "wheel")
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = tuple(f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], *, python: str, extras: tuple[str, ...] = ()) -> dict[str, str]:
    """``{canonical name: installed version}`` of ``roots`` and everything they require on Linux at ``python``."""
    env = {
        **default_environment(),
        "python_version": python,
        "python_full_version": f"{python}.0",
        "platform_system": "Linux",
        "sys_platform": "linux",
    }
    found: dict[str, str] = {}
    todo = [(r, extras) for r in roots]
    while todo:
        name, wanted = todo.pop()
        key = canonical(name)
        if key in found and not wanted:
            continue
        try:
            found[key] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"error: {name} is required but not installed here; pip install -e '.[dev]' -c constraints.txt first"
            ) from None
        for line in metadata.requires(name) or ():
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *wanted)):
                todo.append((req.name, tuple(req.extras)))
    return found


def have(path: str | None, python: str) -> set[str]:
    """What the node already has: its ``pip list --format=freeze``, or a plain CUDA PyTorch image."""
    if path:
        lines = (line.strip() for line in Path(path).read_text().splitlines())
        return {canonical(line.split("==")[0].split(" @ ")[0]) for line in lines if line and not line.startswith("#")}
    return set(closure(["torch", "torchvision"], python=python)) | {canonical(n) for n in PLAIN_IMAGE}


def download(name: str, version: str, *, python: str, out: Path) -> None:
    tag = python.replace(".", "")
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        f"cp{tag}",
        "--abi",
        "abi3",
        "--abi",
        "none",
        *platforms,
        "--platform",
        "any",
        "-d",
        str(out),
        f"{name}=={version}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise SystemExit(f"error: no wheel of {name}=={version} for CPython {python} on x86-64 Linux ({last})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", default="3.12", help="the node's Python version, MAJOR.MINOR (default 3.12)")
    parser.add_argument(
        "--have", help="the node's `python3 -m pip list --format=freeze` (default: a plain CUDA PyTorch image)"
    )
    parser.add_argument(
        "--extra", action="append", default=[], help="also prune-snr's extra (dev, postgres, dashboard)"
    )
    parser.add_argument("--out", default=".", help="where .whl/ and .data/ go (default: the repository root)")
    parser.add_argument("--data", default=str(FASHION_MNIST), help="a folder with Fashion-MNIST's four IDX .gz files")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python):
        parser.error(f"--python {args.python}: give MAJOR.MINOR, e.g. 3.12")
    data = Path(args.data)
    missing = [f for f in FASHION_FILES if not (data / f).is_file()]
    if missing:
        raise SystemExit(
            f"error: {data} lacks {', '.join(missing)}; apt-get install dataset-fashion-mnist or pass --data DIR"
        )
    need = closure(["prune-snr"], python=args.python, extras=tuple(args.extra))
    node = have(args.have, args.python)
    wanted = {name: version for name, version in sorted(need.items()) if name not in node and name != "prune-snr"}
    out = Path(args.out)
    wheels, tmp = out / ".whl", out / ".whl.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, version in wanted.items():
        print(f"{name}=={version}", flush=True)
        download(name, version, python=args.python, out=tmp)
    (tmp / "MANIFEST.txt").write_text("".join(f"{n}=={v}\n" for n, v in wanted.items()))
    shutil.rmtree(wheels, ignore_errors=True)
    tmp.rename(wheels)  # a bundle cut short never passes for a whole one
    (out / ".data").mkdir(exist_ok=True)
    for f in FASHION_FILES:
        shutil.copyfile(data / f, out / ".data" / f)
    size = sum(p.stat().st_size for p in wheels.glob("*.whl")) + sum(
        (out / ".data" / f).stat().st_size for f in FASHION_FILES
    )
    print(
        f"{len(wanted)} wheels for CPython {args.python} in {wheels}, Fashion-MNIST in {out / '.data'}: "
        f"{size / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
