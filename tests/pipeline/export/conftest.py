"""Trained model folders every export test reads (trained once for the whole folder)."""

from __future__ import annotations

import pytest

from bneck.pipeline.training.stage import train


@pytest.fixture(scope="package")
def models(features_dir, tmp_path_factory):
    """One folder per kind of model: a Keras head, the three folded scikit-learn ones and a kernel svm."""
    out = tmp_path_factory.mktemp("export_models")
    train(features_dir, ["gap-dense", "logreg", "linear-svm", "mlp", "svm"], out, verbose=False, epochs=5)
    return out
