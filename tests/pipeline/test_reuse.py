"""How a stage decides to reuse its output, cheapest check first, and says why it runs (pure)."""

from __future__ import annotations

import json

import pytest

from bneck.core.errors import BneckError
from bneck.pipeline.reuse import decide, options_changed, recorded_manifest
from tests.pipeline.test_manifests import CLASSIFIER

pytestmark = pytest.mark.pure


def _folder(tmp_path, manifest=CLASSIFIER):
    folder = tmp_path / "logreg"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


def test_options_changed_names_each_difference_old_to_new():
    assert options_changed({"pca": 64, "folds": 5}, {"pca": 64, "folds": 5}) is None
    assert options_changed({"pca": 64, "folds": 5}, {"pca": 8, "folds": 5}) == "options changed: pca 64 \u2192 8"
    text = options_changed({"lr": 0.001}, {"lr": 0.01, "epochs": 3})
    assert text == "options changed: lr 0.001 \u2192 0.01, epochs unset \u2192 3"
    assert options_changed({"pca": None}, {"pca": None}) is None
    assert options_changed({"t": (1, 2)}, {"t": [1, 2]}) is None  # as JSON records them


def test_the_first_failing_check_is_the_reason_and_later_checks_never_run(tmp_path):
    folder, ran = _folder(tmp_path), []

    def check(name, why):
        def run(manifest):
            ran.append(name)
            return why

        return run

    def verify(path):
        ran.append("verify")

    decision = decide(
        folder,
        [check("options", None), check("features", "feature file changed: train.h5"), check("never", "x")],
        verify,
    )
    assert not decision.reused and decision.why == "feature file changed: train.h5"
    assert ran == ["options", "features"]  # the expensive verification was not reached
    ran.clear()
    decision = decide(folder, [check("options", None)], verify)
    assert decision.reused and decision.why == "unchanged" and ran == ["options", "verify"]


def test_a_folder_that_does_not_verify_is_not_reused_and_says_so(tmp_path):
    def verify(path):
        raise BneckError("model.skops does not match its manifest")

    decision = decide(_folder(tmp_path), [], verify)
    assert not decision.reused and "does not verify" in decision.why and "model.skops" in decision.why


def test_no_folder_or_no_usable_manifest_means_run(tmp_path):
    assert recorded_manifest(str(tmp_path / "missing")) == (None, "no earlier output")
    for text in ("{not json", json.dumps({**CLASSIFIER, "kind": "pickle"}), json.dumps([1])):
        folder = tmp_path / f"f{abs(hash(text))}"
        folder.mkdir()
        (folder / "manifest.json").write_text(text)
        manifest, why = recorded_manifest(str(folder))
        assert manifest is None and why.startswith("the earlier output has no usable manifest")
