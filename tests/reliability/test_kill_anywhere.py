"""kill -9 at seeded points in extraction, head training and fine-tuning (20 points in all).

For each stage, one uninterrupted run (a subprocess) counts its file events under
the work folder and is the reference. Then, for each seeded point, a fresh copy of
the stage's inputs, the same command killed at that file event (SIGKILL, from
inside, so the point is exact), a check that nothing under a real name is a corrupt
artifact, and a rerun that must give the reference's results.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from bneck.features import read_features
from bneck.pipeline.cli import main as bneck_in_process
from tests.conftest import copy_subset
from tests.reliability.conftest import MOBILENET_ARGS, assert_nothing_complete_is_corrupt

SEED = 20261122
KILLS = {"extract": 8, "train": 6, "finetune": 6}
SPLITS = ("train", "validation", "test")


def command(stage: str, work: Path) -> list:
    return {
        "extract": [
            "extract",
            work / "data",
            "--out",
            work / "features",
            "--cache-dir",
            work / "cache",
            "--batch-size",
            "8",
            "--quiet",
            *MOBILENET_ARGS,
        ],
        "train": [
            "train",
            work / "features",
            "--classifier",
            "dense,logreg",
            "--out",
            work / "models",
            "--epochs",
            "3",
            "--quiet",
        ],
        "finetune": [
            "finetune",
            work / "models" / "dense",
            "--data",
            work / "data",
            "--out",
            work / "ft",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--cache-frozen",
            "--views",
            "2",
            "--cache-dir",
            work / "cache",
            "--quiet",
        ],
    }[stage]


# What each stage starts from (copied from the reference), and what it makes.
INPUTS = {"extract": ["data"], "train": ["data", "features"], "finetune": ["data", "models", "cache"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bneck):
    """Uninterrupted runs of the three stages, each counting its file events."""
    ref = tmp_path_factory.mktemp("reference")
    copy_subset(ref / "data", 6)
    counts = {}
    for stage in ("extract", "train", "finetune"):
        for name in INPUTS[stage]:  # what this stage starts from, before it runs
            shutil.copytree(ref / name, ref.parent / f"{ref.name}-inputs" / stage / name, symlinks=True)
        count_file = ref.parent / f"{ref.name}-{stage}.count"
        done = bneck(ref, command(stage, ref), count_file=count_file)
        assert done.returncode == 0, done.output[-3000:]
        counts[stage] = int(count_file.read_text())
    return ref, counts


def _results(stage: str, work: Path):
    if stage == "extract":
        out = {}
        for split in SPLITS:
            f = read_features(str(work / "features" / f"{split}.h5"))
            out[split] = (f.paths, list(f.labels), f.features)
        return out
    if stage == "train":
        return {name: json.loads((work / "models" / name / "metrics.json").read_text()) for name in ("dense", "logreg")}
    with open(work / "ft" / "predictions.csv") as handle:
        rows = list(csv.reader(handle))
    return rows[0], [r[:4] for r in rows[1:]], np.array([[float(x) for x in r[4:]] for r in rows[1:]])


def _same(stage: str, a, b) -> None:
    if stage == "extract":
        for split in SPLITS:
            assert a[split][:2] == b[split][:2]
            np.testing.assert_array_equal(a[split][2], b[split][2])
    elif stage == "train":
        for name in a:
            for split in ("validation", "test"):
                assert a[name][split]["accuracy"] == b[name][split]["accuracy"]
                assert a[name][split]["loss"] == pytest.approx(b[name][split]["loss"], abs=1e-6)
    else:
        assert a[:2] == b[:2]
        np.testing.assert_allclose(a[2], b[2], atol=1e-5)


@pytest.mark.parametrize("stage", list(KILLS))
def test_kill_9_anywhere_then_rerun_equals_an_uninterrupted_run(reference, bneck, tmp_path, stage):
    ref, counts = reference
    total = counts[stage]
    assert total >= 2 * KILLS[stage], f"{stage} made only {total} file events"
    rng = np.random.default_rng([SEED, list(KILLS).index(stage)])
    points = sorted(rng.choice(np.arange(1, total - 1), size=KILLS[stage], replace=False).tolist())
    expected = _results(stage, ref)
    for point in points:
        work = tmp_path / f"kill-{point}"
        shutil.copytree(ref.parent / f"{ref.name}-inputs" / stage, work, symlinks=True)
        killed = bneck(work, command(stage, work), kill_at=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.output[-2000:])
        assert_nothing_complete_is_corrupt(work)
        assert bneck_in_process([str(a) for a in command(stage, work)]) == 0, point
        assert_nothing_complete_is_corrupt(work)
        _same(stage, _results(stage, work), expected)
        shutil.rmtree(work)
