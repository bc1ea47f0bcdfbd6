"""Artifacts that could run code when loaded are never loaded unless they are what their manifest says.

The joblib/pickle case (a planted pickle, with or without a manifest) is in
``tests/pipeline/test_train.py::test_malicious_pickle_without_or_outside_its_manifest_never_runs``.
Here: a Keras model carrying code (a Lambda layer) that even matches its manifest,
and the command line on tampered folders.
"""
from __future__ import annotations

import json

import pytest

from features import extract
from features.hashing import sha256_file
from pipeline import train
from pipeline.artifacts import ArtifactError, load_classifier
from tests.conftest import MOBILENET, copy_subset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    data = copy_subset(root / "data", 3)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **MOBILENET)
    train(root / "features", ["dense", "logreg"], root / "models", epochs=1, verbose=False)
    return root


def _plant_lambda_model(folder, marker) -> None:
    """Replace the head with a model whose Lambda layer writes ``marker``, and re-sign the manifest."""
    import keras

    manifest = json.loads((folder / "manifest.json").read_text())
    path = folder / manifest["model_file"]
    inputs = keras.Input((7, 7, 256))
    payload = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # no closure: serialisable
    x = keras.layers.Lambda(payload)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(path)
    marker.unlink(missing_ok=True)  # tracing the Lambda above ran it once, here, on purpose
    manifest["artifacts"][manifest["model_file"]] = sha256_file(str(path))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_keras_model_with_code_is_refused_even_when_its_manifest_matches(trained, tmp_path):
    folder = tmp_path / "dense"
    import shutil
    shutil.copytree(trained / "models" / "dense", folder)
    marker = tmp_path / "pwned"
    _plant_lambda_model(folder, marker)
    with pytest.raises(ArtifactError) as err:
        load_classifier(str(folder))
    assert "safe_mode" in str(err.value) and str(folder) in str(err.value)
    assert not marker.exists()


def test_tampered_folders_are_refused_by_the_command_line(trained, tmp_path, bneck):
    import shutil

    logreg = tmp_path / "logreg"
    shutil.copytree(trained / "models" / "logreg", logreg)
    (logreg / "model.joblib").write_bytes(b"\x80\x04not the trained model")
    done = bneck(tmp_path, ["predict", logreg, trained / "data" / "test"])
    assert done.returncode == 2 and "does not match its manifest" in done.output
    dense = tmp_path / "dense"
    shutil.copytree(trained / "models" / "dense", dense)
    marker = tmp_path / "pwned"
    _plant_lambda_model(dense, marker)
    done = bneck(tmp_path, ["predict", dense, trained / "data" / "test"])
    assert done.returncode == 2 and "safe_mode" in done.output and "Traceback" not in done.output
    assert not marker.exists()
