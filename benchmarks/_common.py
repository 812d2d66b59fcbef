"""What the benchmark scripts share: their standard arguments, the machine line, the run they study, resumable results.

Not part of the installed package. A script imports it from its own folder, which works whether it
runs as ``python benchmarks/NAME.py`` or is loaded by path (``tests/benchmarks/test_scripts.py``)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
    from _common import load_results, machine_line, save_results  # noqa: E402

Example:
    >>> parser = script_parser("Prune the same model under many options.\\n\\nMore text.")
    >>> add_standard(parser, "checkpoint", "seeds", "out")
    >>> args = parser.parse_args(["model.pt", "--out", "runs/x"])
    >>> args.checkpoint, ints(args.seeds), args.out
    ('model.pt', [0, 1, 2], 'runs/x')
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prune_snr.atomic import atomic_save_json
from prune_snr.checkpoint import load_checkpoint, trained_on
from prune_snr.measure import Measurement

#: The arguments most scripts take, spelled and defaulted once: name -> (flags, keyword arguments).
STANDARD = {
    "checkpoint": (("checkpoint",), {}),
    "measurement": (("--measurement",), {"required": True}),  # where a script needs one; others explain their own
    "target": (("--target",), {"type": float, "default": 0.5}),
    "seeds": (("--seeds",), {"default": "0,1,2"}),
    "device": (("--device",), {"default": "auto"}),
    "out": (("--out",), {"required": True}),
}


def script_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the first line of the script's docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def add_standard(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the :data:`STANDARD` arguments ``names`` to ``parser``, in that order."""
    for name in names:
        flags, options = STANDARD[name]
        parser.add_argument(*flags, **options)


def ints(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (arguments stay strings, so results files record them as given)."""
    return [int(v) for v in text.split(",")]


def floats(text: str) -> list[float]:
    """``"0.3,0.5"`` -> ``[0.3, 0.5]``."""
    return [float(v) for v in text.split(",")]


def machine_line(detail: str | None = None) -> str:
    """``HOST (N CPU threads, DETAIL)``: where a result was measured; DETAIL defaults to the GPU
    (``CUDA NAME`` or ``no GPU``)."""
    if detail is None:
        detail = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} ({torch.get_num_threads()} CPU threads, {detail})"


@dataclass
class Run:
    """A checkpoint a script studies: its payload, the data it was trained on, and a measurement of
    it if one was given."""

    checkpoint: str
    payload: dict
    dataset: str | None
    data_dir: str | None
    measurement: Measurement | None = None


def load_run(checkpoint: str | Path, measurement: str | Path | None = None) -> Run:
    """The checkpoint's payload and training data (:func:`prune_snr.checkpoint.trained_on`), and
    ``measurement``'s folder loaded."""
    payload = load_checkpoint(checkpoint)
    dataset, data_dir = trained_on(payload)
    return Run(str(checkpoint), payload, dataset, data_dir, Measurement.load(measurement) if measurement else None)


def load_results(path: str | Path, default: Any = None) -> Any:
    """What an earlier run wrote to ``path`` (JSON), or ``default`` when there is none: a rerun resumes from it."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


def save_results(path: str | Path, data: Any) -> Path:
    """Write ``data`` to ``path`` as JSON, atomically: a killed run leaves the last whole file, never half of one."""
    return atomic_save_json(path, data)
