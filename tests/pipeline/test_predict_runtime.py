"""`bneck predict --runtime auto`: OpenVINO only when it costs nothing to trust, with the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from bneck.features import extract
from bneck.pipeline.cli import main
from bneck.pipeline.predict import classify
from bneck.pipeline.training.stage import train
from tests.conftest import MOBILENET, copy_subset

PROBE = r"""
import json, sys
from bneck.pipeline.predict import classify
info = {}
_, rows = classify(sys.argv[1], sys.argv[2:], runtime="auto", info=info)
print(json.dumps({"info": info, "tensorflow_imported": "tensorflow" in sys.modules,
                  "probabilities": [list(r["probabilities"].values()) for r in rows]}))
"""


def _probe(model, images, tmp_path):
    cwd = tmp_path / "cwd"  # an empty folder: a folder named like a package beside it would shadow it
    cwd.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(model), *map(str, images)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_auto_takes_the_checked_openvino_model_without_tensorflow_and_agrees(tmp_path, capsys):
    data = copy_subset(tmp_path / "data", 4)
    images = sorted((data / "test").glob("*/*.jpg"))
    extract(data, tmp_path / "features", verbose=False, **MOBILENET)  # TensorFlow: nothing converted
    train(tmp_path / "features", ["logreg"], tmp_path / "models", verbose=False)
    model = tmp_path / "models" / "logreg"
    before = _probe(model, images, tmp_path)
    assert before["info"]["runtime"] == "tensorflow" and before["tensorflow_imported"]
    # converting and checking happens in an extraction; then predict takes it, and TensorFlow is never imported
    copy_subset(tmp_path / "more", 2, splits=("train", "validation"), offset=50)
    extract(tmp_path / "more", tmp_path / "ov_features", runtime="openvino", verbose=False, **MOBILENET)
    after = _probe(model, images, tmp_path)
    assert after["info"]["runtime"] == "openvino" and not after["tensorflow_imported"]
    assert np.abs(np.array(after["probabilities"]) - np.array(before["probabilities"])).max() <= 1e-4
    # said on the command line; --runtime tensorflow still means TensorFlow
    assert main(["predict", str(model), str(images[0]), "--runtime", "tensorflow"]) == 0
    assert "runtime: tensorflow (asked for)" in capsys.readouterr().err
    assert main(["predict", str(model), str(images[0]), "--runtime", "openvin"]) == 2
    assert "Did you mean 'openvino'?" in capsys.readouterr().err


def test_a_converted_model_never_checked_here_is_not_taken_by_auto(tmp_path):
    from bneck.features.cache.rows import default_cache_dir
    from bneck.features.runtimes.openvino import converted_path

    data = copy_subset(tmp_path / "data", 2)
    report = extract(data, tmp_path / "f", runtime="openvino", verbose=False, **MOBILENET)
    train(tmp_path / "f", ["logreg"], tmp_path / "m", verbose=False)
    path = converted_path(default_cache_dir(), report.spec)
    with open(path, "ab") as handle:  # other bytes than the ones checked (as a shared cache could hold)
        handle.write(b"\n")
    info = {}
    classify(str(tmp_path / "m" / "logreg"), [str(next((data / "test").glob("*/*.jpg")))], info=info)
    assert info["runtime"] == "tensorflow"
