"""Stage 2 decides its own reuse: a second ``train`` with unchanged inputs fits nothing, from the API
and the command line alike, and every classifier it does fit says why (fits counted, not timed)."""

from __future__ import annotations

import os
import shutil

import pytest

import bneck.pipeline.training.stage as stage
from bneck.features import extract
from bneck.pipeline.cli import main
from bneck.pipeline.training.stage import train
from tests.generated import make_images

pytestmark = pytest.mark.pure

FAST = dict(epochs=2, seed=0)


@pytest.fixture(scope="module")
def tiny_features_dir(tiny, tmp_path_factory):
    """Cats vs dogs, 40 generated images per class in train/validation/test, tiny-backbone features."""
    root = tmp_path_factory.mktemp("tiny_train_reuse")
    data = make_images(root / "data", 40)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    return root / "features"


@pytest.fixture
def fits(monkeypatch):
    """Count the real fits (the real fit runs; the spy only records which classifier)."""
    names = []
    real = stage.fit_classifier

    def spy(name, *args, **kwargs):
        names.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(stage, "fit_classifier", spy)
    return names


def _inode(folder):
    return os.stat(folder).st_ino, os.stat(os.path.join(folder, "manifest.json")).st_mtime_ns


def test_a_second_train_with_unchanged_inputs_fits_nothing(tiny_features_dir, tmp_path, fits):
    out = tmp_path / "models"
    first = train(tiny_features_dir, ["dense", "logreg"], out, verbose=False, **FAST)
    assert sorted(fits) == ["dense", "logreg"] and not any(r.reused for r in first.results)
    assert {r.why for r in first.results} == {"no earlier output"}
    before = {r.name: _inode(r.folder) for r in first.results}
    second = train(tiny_features_dir, ["dense", "logreg"], out, verbose=False, **FAST)
    assert sorted(fits) == ["dense", "logreg"]  # no new fit
    assert all(r.reused and r.why == "unchanged" for r in second.results)
    assert {r.name: _inode(r.folder) for r in second.results} == before  # the folders were not rewritten
    assert {r.name: r.accuracy("test") for r in second.results} == {r.name: r.accuracy("test") for r in first.results}
    assert "reused" in (out / "leaderboard.csv").read_text()


def test_each_change_retrains_only_what_it_touches_and_says_why(tiny_features_dir, tmp_path, fits):
    out = tmp_path / "models"
    train(tiny_features_dir, ["dense", "logreg", "knn"], out, verbose=False, **FAST)
    fits.clear()
    board = train(tiny_features_dir, ["dense", "logreg", "knn"], out, verbose=False, pca=8, **FAST)
    assert sorted(fits) == ["knn", "logreg"]  # pca is not an option of a Keras head
    why = {r.name: r.why for r in board.results}
    assert why["logreg"] == why["knn"] == "options changed: pca unset \u2192 8" and why["dense"] == "unchanged"
    fits.clear()
    board = train(tiny_features_dir, ["logreg"], out, verbose=False, overrides={"logreg": {"pca": 4}}, **FAST)
    assert fits == ["logreg"] and board.results[0].why == "options changed: pca 8 \u2192 4"
    fits.clear()
    board = train(
        tiny_features_dir, ["logreg"], out, verbose=False, overrides={"logreg": {"pca": 4}}, retrain=True, **FAST
    )
    assert fits == ["logreg"] and board.results[0].why == "--retrain"


def test_changed_features_or_a_damaged_folder_are_trained_again(tiny_features_dir, tmp_path, fits):
    out, copy = tmp_path / "models", tmp_path / "features"
    shutil.copytree(tiny_features_dir, copy)
    train(copy, ["logreg"], out, verbose=False, **FAST)
    fits.clear()
    shutil.copy(copy / "validation.h5", copy / "test.h5")  # another (valid) test file
    board = train(copy, ["logreg"], out, verbose=False, **FAST)
    assert fits == ["logreg"] and board.results[0].why == "feature file changed: test.h5"
    fits.clear()
    with open(out / "logreg" / "metrics.json", "a") as handle:
        handle.write(" ")
    board = train(copy, ["logreg"], out, verbose=False, **FAST)
    assert fits == ["logreg"] and board.results[0].why.startswith("the earlier output does not verify")


def test_the_command_line_reuses_and_says_so(tiny_features_dir, tmp_path, capsys, fits):
    argv = ["train", str(tiny_features_dir), "--classifier", "logreg", "--out", str(tmp_path / "m"), "--quiet"]
    assert main(argv) == 0 and fits == ["logreg"]
    assert "logreg: trained: no earlier output" in capsys.readouterr().out
    assert main(argv) == 0 and fits == ["logreg"]
    assert "logreg: reused, unchanged" in capsys.readouterr().out


def test_streamed_and_in_memory_models_are_never_taken_for_each_other(tiny_features_dir, tmp_path, fits):
    """--max-memory trains out of core (other batches, another model: validation 1.00 against 0.70 was
    seen); reuse compares the path, both ways, for the Keras heads and scikit-learn alike."""
    out = tmp_path / "models"
    train(tiny_features_dir, ["dense", "logreg"], out, verbose=False, **FAST)
    fits.clear()
    board = train(tiny_features_dir, ["dense", "logreg"], out, verbose=False, max_memory=1, **FAST)
    assert sorted(fits) == ["dense", "logreg"] and all(r.streamed for r in board.results)
    assert {r.why for r in board.results} == {"trained in memory before, streamed (--max-memory) now"}
    fits.clear()
    board = train(tiny_features_dir, ["dense", "logreg"], out, verbose=False, max_memory=1, **FAST)
    assert fits == [] and all(r.reused for r in board.results), [(r.name, r.why) for r in board.results]
    board = train(tiny_features_dir, ["dense", "logreg"], out, verbose=False, **FAST)
    assert sorted(fits) == ["dense", "logreg"]
    assert {r.why for r in board.results} == {"trained streamed (--max-memory) before, in memory now"}


def test_a_folder_whose_domain_could_not_be_calibrated_is_reused(tiny, tmp_path, fits):
    """Issue 27: with fewer than two validation images per class no domain.json was written, so every rerun
    trained again "because an older bneck made it", and predict advised retraining, which never helped."""
    import json

    from bneck.pipeline.predict import classify

    data = make_images(tmp_path / "data", 4)
    for cls in ("cats", "dogs"):
        for extra in sorted((data / "validation" / cls).iterdir())[1:]:
            extra.unlink()
    extract(data, tmp_path / "features", cache_dir=tmp_path / "cache", verbose=False, **tiny)
    train(tmp_path / "features", ["logreg", "dense"], tmp_path / "models", verbose=False, **FAST)
    recorded = json.loads((tmp_path / "models" / "logreg" / "domain.json").read_text())
    assert recorded == {"uncalibrated": "its validation split has no class with two images to calibrate on"}
    fits.clear()
    board = train(tmp_path / "features", ["logreg", "dense"], tmp_path / "models", verbose=False, **FAST)
    assert fits == [] and all(r.reused and r.why == "unchanged" for r in board.results)
    info: dict = {}
    classify(str(tmp_path / "models" / "logreg"), [str(data / "test")], info=info)
    assert "no class with two images" in info["domain"] and "older bneck" not in info["domain"]
