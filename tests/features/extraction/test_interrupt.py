"""A real process killed (kill -9) mid-extraction; four at once into one cache: tests/reliability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from bneck.features import extract, read_features
from tests.conftest import MOBILENET, ROOT, copy_subset

SCRIPT = """
import sys
from bneck.features import extract
extract(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], batch_size=8, commit_rows=8,
        commit_seconds=1e9, verbose=False, backbone="mobilenet", alpha=0.25, size=224,
        weights="imagenet")
"""


def _start(data, out, cache):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(data), str(out), str(cache)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _chunks(cache: Path) -> list[Path]:
    return list(cache.glob("features/*/rows-*.h5"))


def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    data = copy_subset(tmp_path / "data", 100, splits=("train",))
    cache = tmp_path / "cache"
    proc = _start(data, tmp_path / "out", cache)
    deadline = time.monotonic() + 120
    while len(_chunks(cache)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the extraction finished before it could be killed"
    done_before = sum(len(h5py.File(p, "r")["sha256"]) for p in _chunks(cache))
    assert 16 <= done_before < 200
    # Nothing under the real output name, nor anything that claims to be complete.
    out_files = list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else []
    assert not [p for p in out_files if not p.name.startswith(".")]
    for tmp in out_files:
        try:
            with h5py.File(tmp, "r") as f:
                assert not f.attrs.get("complete", False)
        except OSError:
            pass  # unreadable partial file: cannot be mistaken for a complete one

    resumed = extract(data, tmp_path / "out", cache_dir=cache, batch_size=8, commit_rows=8, verbose=False, **MOBILENET)
    assert resumed.forward_images == 200 - done_before  # finished batches are not redone
    clean = extract(
        data, tmp_path / "clean", cache_dir=tmp_path / "clean_cache", batch_size=8, verbose=False, **MOBILENET
    )
    assert clean.forward_images == 200
    a = read_features(str(tmp_path / "out" / "train.h5"))
    b = read_features(str(tmp_path / "clean" / "train.h5"))
    assert a.paths == b.paths and a.sha256 == b.sha256 and list(a.labels) == list(b.labels)
    np.testing.assert_array_equal(a.features, b.features)
