"""Specs of atomic.py: a write that fails leaves the previous file whole and no temp file."""

import errno
import json
import os

import pytest

from prune_snr.atomic import atomic_save_bytes, atomic_save_json
from prune_snr.errors import PruneSnrError


@pytest.mark.parametrize(
    "write,old,new,read",
    [
        (atomic_save_bytes, b"old", b"new", lambda path: path.read_bytes()),
        (
            atomic_save_json,
            {"version": 1},
            {"version": 2, "payload": list(range(1000))},
            lambda path: json.loads(path.read_text()),
        ),
    ],
    ids=["bytes", "json"],
)
def test_a_full_disk_leaves_the_previous_file_whole_and_no_temp_file(tmp_path, monkeypatch, write, old, new, read):
    target = tmp_path / "artifact"
    write(target, old)

    def disk_full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(PruneSnrError, match="No space left on device; free disk space"):
        write(target, new)
    assert read(target) == old
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]
