"""Four processes extracting overlapping image sets into one cache at the same time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np

from bneck.features import extract, read_features
from bneck.features.cache.maintenance import collect_garbage, list_entries
from bneck.features.cache.verify import verify_cache
from tests.conftest import DATA, MOBILENET, ROOT
from tests.reliability.conftest import KILLER, MOBILENET_ARGS

# Image index ranges per process (per class): every image is wanted by two or more processes.
RANGES = [(0, 12), (6, 18), (12, 24), (0, 24)]


def _dataset(dest, start, stop):
    for cls in ("cats", "dogs"):
        (dest / "train" / cls).mkdir(parents=True)
        for i in range(start, stop):
            shutil.copy(DATA / "train" / cls / f"{cls[:-1]}.{i}.jpg", dest / "train" / cls)
    return dest


def test_four_processes_extracting_overlapping_sets_into_one_cache(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for n, (start, stop) in enumerate(RANGES):
        data = _dataset(tmp_path / f"data{n}", start, stop)
        args = [
            "extract",
            data,
            "--out",
            tmp_path / f"out{n}",
            "--cache-dir",
            cache,
            "--batch-size",
            "4",
            "--quiet",
            *MOBILENET_ARGS,
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, str(KILLER), str(tmp_path), "0", os.devnull, *map(str, args)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-2000:]
    # Consistent: every chunk intact, one entry, each image's row once per chunk it was made in.
    chunks, problems = verify_cache(str(cache))
    assert not problems and chunks >= 4
    (entry,) = list_entries(str(cache))
    assert entry.rows == 48
    # Every process's file equals an extraction of the same images made alone.
    alone = extract(
        tmp_path / "data3", tmp_path / "alone", cache_dir=tmp_path / "alone_cache", verbose=False, **MOBILENET
    )
    assert alone.forward_images == 48
    reference = read_features(str(tmp_path / "alone" / "train.h5"))
    by_sha = dict(zip(reference.sha256, reference.features))
    for n in range(4):
        got = read_features(str(tmp_path / f"out{n}" / "train.h5"))
        assert len(got.paths) == 2 * (RANGES[n][1] - RANGES[n][0])
        for sha, row in zip(got.sha256, got.features):
            np.testing.assert_allclose(row, by_sha[sha], rtol=1e-4, atol=1e-4)  # other batch sizes
    # gc merges the overlapping chunks into one without losing a row.
    collect_garbage(str(cache))
    (entry,) = list_entries(str(cache))
    assert entry.rows == 48 and entry.chunks == 1 and not verify_cache(str(cache))[1]
    again = extract(tmp_path / "data3", tmp_path / "out3", cache_dir=cache, verbose=False, **MOBILENET)
    assert again.forward_images == 0


HOLDER = """
import sys, time
from bneck.core.private import releases_claims
from bneck.core.folders import claim_folder

@releases_claims
def hold(path, kind):
    claim_folder(path, kind)
    print("held", flush=True)
    time.sleep(120)

hold(sys.argv[1], sys.argv[2])
"""


def test_a_second_writer_of_an_output_folder_is_refused_while_the_first_writes(tmp_path, tiny, tiny_data):
    """Issue 27: two `train` (or `extract`) runs into one --out both exited 0, and the folder held one's
    models and the other's leaderboard. While a process writes a folder, a stage claiming it elsewhere
    is refused in one paragraph before any work; once the writer is gone, the stage runs."""
    import pytest

    from bneck.core.private import FolderInUse
    from bneck.pipeline.training.stage import train

    extract(str(tiny_data), str(tmp_path / "feats"), cache_dir=str(tmp_path / "c"), verbose=False, **tiny)
    for kind, out, stage in (
        ("models", tmp_path / "models", lambda: train(str(tmp_path / "feats"), ["logreg"], str(tmp_path / "models"))),
        (
            "features",
            tmp_path / "feats2",
            lambda: extract(
                str(tiny_data), str(tmp_path / "feats2"), cache_dir=str(tmp_path / "c"), verbose=False, **tiny
            ),
        ),
    ):
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(out), kind],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(FolderInUse, match="is being written by another bneck command right now"):
                stage()
            assert sorted(os.listdir(out)) == [".bneck-folder.json"]  # nothing written
        finally:
            holder.kill()
            holder.wait()
        stage()  # the writer is gone: the lock went with it
        stage()  # and a process claims again what it released
