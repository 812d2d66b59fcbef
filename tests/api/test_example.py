"""The example a newcomer copies runs: your own class and loop, measured, pruned to half the MACs, saved, reloaded
in a fresh process, exported."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_prune_your_own_model_example_runs_end_to_end_in_its_fast_setting():
    done = subprocess.run(
        [sys.executable, "examples/prune_your_own_model.py", "--fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    macs = float(re.search(r"MACs ([\d.]+) of the original", done.stdout).group(1))
    assert abs(macs - 0.5) <= 0.02
    assert "logits equal True" in done.stdout
    assert float(re.search(r"ONNX max abs diff ([\d.e+-]+);", done.stdout).group(1)) <= 1e-4
