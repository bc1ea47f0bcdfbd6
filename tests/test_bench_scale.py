"""scripts/bench_scale.py, the cost curve, at its smallest size (issue 28): every stage really ran on
1,000 distinct JPEGs, and the table's figures are the files' and processes' own."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from bneck.features import read_features
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from scale_images import make  # noqa: E402


def test_scaled_sets_are_distinct_images_nested_by_hard_links(tmp_path):
    large = make(60, tmp_path / "60")
    small = make(20, tmp_path / "20", like=tmp_path / "60")
    digests = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in large]
    assert len(set(digests)) == 60 and {p.split("/")[-3] for p in large} == {"train", "validation", "test"}
    for path in small:  # the smaller set is the larger one's first images, the same files
        twin = path.replace(str(tmp_path / "20"), str(tmp_path / "60"))
        assert os.stat(path).st_ino == os.stat(twin).st_ino


def test_the_cost_curve_at_its_smallest_size(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench_scale.py", "--sizes", "1000", "--work", str(tmp_path), "--epochs", "2",
         "--finetune-epochs", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    counts = {
        s: len(read_features(str(tmp_path / "runs/1000/features" / f"{s}.h5")).paths)
        for s in ("train", "validation", "test")
    }
    assert row["images"] == 1000 and counts == {"train": 800, "validation": 100, "test": 100}
    assert row["extract_s"] > 0 and row["train_s"] > 0 and row["epoch_s"] > 0 and row["finetune_s"] > row["epoch_s"]
    assert 200 < row["extract_peak_mb"] < 8000 and 200 < row["train_peak_mb"] < 8000  # a bneck process, not the shell
    assert row["cache_mb"] > 1 and row["features_mb"] > 1 and row["views_mb"] > 1 and row["streamed"] == []
    assert "extract ms/img" in done.stdout and "1,000" in done.stdout and row["runtime"] in ("tensorflow", "openvino")
