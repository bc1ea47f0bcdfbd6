"""Stage 2 on feature files (the tiny backbone's; real ones where accuracy counts): every classifier, artifacts,
leaderboard, trust, out of core."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from bneck.core.hashing import sha256_file
from bneck.features import FeatureFileError, extract, read_features
from bneck.pipeline.artifacts import ArtifactError, load_classifier
from bneck.pipeline.data import FeatureSet, open_feature_set
from bneck.pipeline.predict import classifier_proba, evaluate, predict_images
from bneck.pipeline.training.options import CLASSIFIERS
from bneck.pipeline.training.stage import train
from tests.generated import make_images

FAST = dict(epochs=8)


@pytest.fixture(scope="module")
def tiny_image_root(tmp_path_factory):
    """Cats vs dogs, 40 generated images per class in train/validation/test."""
    return make_images(tmp_path_factory.mktemp("tiny_stage2") / "data", 40)


@pytest.fixture(scope="module")
def tiny_features_dir(tiny_image_root, tiny):
    """The tiny backbone's features (2x2x256 grids) of ``tiny_image_root``."""
    root = tiny_image_root.parent
    extract(tiny_image_root, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    return root / "features"


def test_every_classifier_trains_saves_and_ranks(features_dir, tmp_path):
    board = train(features_dir, CLASSIFIERS, tmp_path / "models", verbose=False, **FAST)
    assert sorted(r.name for r in board.results) == sorted(CLASSIFIERS)
    vals = [r.accuracy("validation") for r in board.results]
    assert vals == sorted(vals, reverse=True)
    with open(tmp_path / "models" / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == [r.name for r in board.results]
    assert all(float(r["test_accuracy"]) > 0.6 for r in rows)  # real features separate cats from dogs
    for result in board.results:
        folder = tmp_path / "models" / result.name
        manifest = json.loads((folder / "manifest.json").read_text())
        files = set(os.listdir(folder)) - {"manifest.json"}
        assert set(manifest["artifacts"]) == files
        for name, digest in manifest["artifacts"].items():
            assert sha256_file(str(folder / name)) == digest
        assert {"metrics.json", "confusion_validation.png", "confusion_test.png"} <= files
        assert manifest["class_names"] == ["cats", "dogs"]
        assert manifest["extractor"]["backbone"] == "mobilenet"
        assert set(manifest["feature_files"]) == {"train", "validation", "test"}
        assert "tensorflow_version" in manifest["versions"]
        metrics = json.loads((folder / "metrics.json").read_text())
        for split in ("train", "validation", "test"):
            assert {"accuracy", "loss", "macro_f1", "per_class", "confusion_matrix"} <= set(metrics[split])
        if result.name in ("dense", "gap-dense"):
            assert {"model.keras", "head.weights.h5", "history.csv", "curves.png"} <= files
            assert manifest["trained"] is True and manifest["epochs_run"] == 8
        else:
            assert "model.skops" in files and "model.joblib" not in files
        # the reloaded model reproduces the recorded test accuracy
        clf = load_classifier(str(folder))
        f = read_features(str(features_dir / "test.h5"))
        acc = float((classifier_proba(clf, f.features).argmax(1) == f.labels).mean())
        assert acc == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.pure
def test_reference_dense_head_architecture(tiny_features_dir, tmp_path):
    train(tiny_features_dir, ["dense"], tmp_path / "m", verbose=False, epochs=2)
    model = load_classifier(str(tmp_path / "m" / "dense")).model
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Flatten", "Dense", "Dropout", "Dense"]
    assert model.layers[2].units == 256 and model.layers[3].rate == 0.5
    assert model.layers[4].units == 1 and model.layers[4].activation.__name__ == "sigmoid"
    assert model.input_shape == (None, 2, 2, 256)


def test_multiclass_works_like_binary(multiclass_features_dir, tmp_path):
    board = train(multiclass_features_dir, ["dense", "logreg", "knn"], tmp_path / "m", verbose=False, epochs=30)
    for result in board.results:
        test = result.metrics["test"]
        assert set(test["per_class"]) == {"cats", "dogs", "gray"}
        assert np.array(test["confusion_matrix"]).shape == (3, 3)
        assert np.array(test["confusion_matrix"]).sum() == test["n"]
        # grayscale negatives are easy to tell apart from real photos; cats vs dogs above chance
        assert test["per_class"]["gray"]["recall"] >= 0.8 and test["accuracy"] >= 0.6
    dense = load_classifier(str(tmp_path / "m" / "dense")).model
    assert dense.layers[-1].units == 3 and dense.layers[-1].activation.__name__ == "softmax"


@pytest.mark.pure
def test_options_reach_the_model(tiny_features_dir, tmp_path):
    board = train(
        tiny_features_dir,
        ["gap-dense", "logreg"],
        tmp_path / "m",
        verbose=False,
        epochs=30,
        optimizer="adam",
        units=64,
        dropout=0.2,
        early_stopping=2,
        class_weight="balanced",
        reshape="max",
        pca=16,
        seed=3,
    )
    gap = next(r for r in board.results if r.name == "gap-dense")
    manifest = json.loads((tmp_path / "m" / "gap-dense" / "manifest.json").read_text())
    assert manifest["config"]["optimizer"] == "adam" and manifest["config"]["early_stopping"] == 2
    assert manifest["epochs_run"] < 30 or gap.accuracy("validation") is not None
    pipe = load_classifier(str(tmp_path / "m" / "logreg")).model
    assert pipe.named_steps["reshape"].mode == "max" and pipe.named_steps["pca"].n_components == 16


@pytest.mark.pure
def test_search_tunes_on_validation(tiny_features_dir, tmp_path):
    train(tiny_features_dir, ["logreg", "knn"], tmp_path / "m", verbose=False, search="validation")
    manifest = json.loads((tmp_path / "m" / "knn" / "manifest.json").read_text())
    assert set(manifest["search"]["best_params"]) == {"clf__n_neighbors", "clf__weights"}
    train(tiny_features_dir, ["logreg"], tmp_path / "k", verbose=False, search="kfold", folds=3)
    manifest = json.loads((tmp_path / "k" / "logreg" / "manifest.json").read_text())
    assert "cv_accuracy" in manifest["search"]


@pytest.mark.pure
def test_keep_best_keeps_only_the_winner(tiny_features_dir, tmp_path):
    board = train(tiny_features_dir, ["logreg", "knn", "random-forest"], tmp_path / "m", verbose=False, keep="best")
    kept = sorted(n for n in os.listdir(tmp_path / "m") if n not in ("leaderboard.csv", ".bneck-folder.json"))
    assert kept == [board.best.name] and len(board.results) == 1


@pytest.mark.pure
def test_tampered_artifact_is_refused(tiny_features_dir, tmp_path):
    train(tiny_features_dir, ["logreg"], tmp_path / "m", verbose=False)
    model_file = tmp_path / "m" / "logreg" / "model.skops"
    data = bytearray(model_file.read_bytes())
    data[-10] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        load_classifier(str(tmp_path / "m" / "logreg"))


class _Planted:
    def __reduce__(self):
        return (open, (MARKER, "w"))


MARKER = ""


@pytest.mark.pure
def test_malicious_pickle_without_or_outside_its_manifest_never_runs(tiny_features_dir, tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    train(tiny_features_dir, ["logreg"], tmp_path / "m", verbose=False)
    folder = tmp_path / "m" / "logreg"
    (folder / "model.joblib").write_bytes(pickle.dumps(_Planted()))
    with pytest.raises(ArtifactError):
        load_classifier(str(folder))
    os.remove(folder / "manifest.json")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_classifier(str(folder))
    assert not os.path.exists(MARKER)


@pytest.mark.pure
def test_mismatched_extractor_is_refused(tiny_features_dir, tmp_path, tiny_image_root, tiny):
    import shutil

    extract(tiny_image_root, tmp_path / "pooled", splits=["validation"], pool="avg", verbose=False, **tiny)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for split in ("train", "test"):
        shutil.copy(tiny_features_dir / f"{split}.h5", mixed / f"{split}.h5")
    shutil.copy(tmp_path / "pooled" / "validation.h5", mixed / "validation.h5")
    with pytest.raises(FeatureFileError) as err:
        train(mixed, ["logreg"], tmp_path / "m", verbose=False)
    assert "validation.h5" in str(err.value) and "pool 'avg' here, 'none' in train.h5" in str(err.value)
    train(tiny_features_dir, ["logreg"], tmp_path / "m", verbose=False)
    with pytest.raises(FeatureFileError, match="another extractor"):
        evaluate(str(tmp_path / "m" / "logreg"), str(mixed / "validation.h5"))


def test_out_of_core_training_matches_in_memory(features_dir, tmp_path, monkeypatch):
    import bneck.pipeline.training.heads as heads

    in_memory = train(features_dir, ["logreg", "dense"], tmp_path / "mem", verbose=False, epochs=10)
    fs = open_feature_set(features_dir)
    row_bytes = fs.nbytes("train") // fs.attrs["train"]["n_images"]
    budget = fs.nbytes("train") // 4  # a quarter of the rows in memory (the file is compressed: smaller)
    assert budget < fs.nbytes("train")

    def never(*_):
        raise AssertionError("loaded a whole split despite the memory budget")

    largest = []  # rows of every read from disk, through the real readers
    real_blocks, real_batches = FeatureSet.blocks, heads.h5_batches

    def blocks(self, split, rows, rng=None):
        for x, y in real_blocks(self, split, rows, rng):
            largest.append(len(x))
            yield x, y

    def batches(*args, **kwargs):
        dataset = real_batches(*args, **kwargs)
        getitem = type(dataset).__getitem__
        type(dataset).__getitem__ = lambda self, i: (lambda xy: (largest.append(len(xy[0])), xy)[1])(getitem(self, i))
        return dataset

    monkeypatch.setattr(FeatureSet, "load", never)
    monkeypatch.setattr(FeatureSet, "blocks", blocks)
    monkeypatch.setattr(heads, "h5_batches", batches)
    streamed = train(features_dir, ["logreg", "dense"], tmp_path / "disk", verbose=False, epochs=10, max_memory=budget)
    assert largest and max(largest) * row_bytes <= budget
    assert sum(largest) > 10 * fs.attrs["train"]["n_images"]  # every epoch really read the file
    a, b = (next(r for r in board.results if r.name == "dense") for board in (in_memory, streamed))
    assert b.streamed and not a.streamed
    assert abs(a.accuracy("test") - b.accuracy("test")) <= 0.06
    # logreg pools the grid block by block: its pooled rows fit the budget, so it trains in memory as before
    a, b = (next(r for r in board.results if r.name == "logreg") for board in (in_memory, streamed))
    assert not b.streamed and not a.streamed
    x = read_features(str(features_dir / "test.h5")).features
    want, got = (classifier_proba(load_classifier(r.folder), x) for r in (a, b))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_pooling_as_it_reads_fits_what_scikit_learn_fits_on_the_whole_features(features_dir, tmp_path):
    """A scikit-learn model that pools the grid never holds the whole features (issue 28: 3.6 GB for
    20,000 images); its model is the one scikit-learn fits on them, compared here independently."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    board = train(features_dir, ["logreg"], tmp_path / "m", verbose=False, max_memory="1M")
    fs = open_feature_set(features_dir)
    assert fs.nbytes("train") > 2**20 and not board.results[0].streamed  # only pooled rows held
    train_set, test_set = (read_features(str(features_dir / f"{s}.h5")) for s in ("train", "test"))
    pool = lambda f: f.features.reshape(len(f.features), -1, f.features.shape[-1]).mean(axis=1)  # noqa: E731
    clf = load_classifier(board.results[0].folder).model
    independent = make_pipeline(StandardScaler(), LogisticRegression(**clf.steps[-1][1].get_params()))
    independent.fit(pool(train_set), train_set.labels)
    got = classifier_proba(load_classifier(board.results[0].folder), test_set.features)
    np.testing.assert_allclose(got, independent.predict_proba(pool(test_set)), rtol=0, atol=1e-6)


def test_pooled_rows_are_read_in_small_blocks_whatever_the_budget(features_dir, monkeypatch):
    """Pooling reads at most REDUCE_BLOCK_BYTES of features at once (issue 28: blocks of a quarter of the
    budget held 800 MB while 100,000 images were pooled) and fills one array: the rows pooled whole."""
    import bneck.pipeline.data as data
    from bneck.pipeline.training.sklearn_models import SpatialReshape

    fs = open_feature_set(features_dir)
    row_bytes = 4 * int(np.prod(fs.feature_shape))
    monkeypatch.setattr(data, "REDUCE_BLOCK_BYTES", 7 * row_bytes)
    sizes, blocks = [], fs.blocks
    monkeypatch.setattr(fs, "blocks", lambda *a, **k: (sizes.append(len(b[0])) or b for b in blocks(*a, **k)))
    x, y = fs.reduced("train", SpatialReshape("avg"), rows=10**6)
    whole = read_features(str(features_dir / "train.h5"))
    pooled = whole.features.astype(np.float32).reshape(len(y), -1, fs.feature_shape[-1]).mean(axis=1)
    np.testing.assert_allclose(x, pooled, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y, whole.labels)
    assert max(sizes) == 7 and sum(sizes) == len(y) and not x.flags.writeable


def test_without_max_memory_training_streams_what_would_not_fit_and_says_so(
    features_dir, tmp_path, monkeypatch, caplog
):
    """The budget bneck chooses: half of the machine's memory (here a machine of 1 MB)."""
    import logging

    import bneck.pipeline.data as data

    monkeypatch.setattr(data, "physical_memory", lambda: 1 << 20)
    with caplog.at_level(logging.INFO):
        board = train(features_dir, ["logreg", "gap-dense", "dense"], tmp_path / "m", epochs=2, verbose=True)
    streamed = {r.name: r.streamed for r in board.results}
    fs = open_feature_set(features_dir)
    pooled = sum(fs.nbytes(s) for s in fs.files) // int(np.prod(fs.feature_shape[:-1]))
    fits = pooled * 3 <= (1 << 19)
    assert streamed == {"logreg": not fits, "gap-dense": not fits, "dense": True}
    assert "dense streams them from disk" in caplog.text and "--max-memory SIZE" in caplog.text


def test_gap_dense_trains_on_pooled_rows_and_saves_the_whole_head(features_dir, tmp_path):
    """gap-dense's pooling has no weights: trained on pooled rows (issue 28: streaming the grid made
    100,000 images cost twice as much per image), saved with its pooling, it is the head trained on the
    grid as before (that path run here, the same seed), and scores what it recorded."""
    import keras

    from bneck.pipeline.training.heads import build_head, fit_head, proba

    (result,) = train(features_dir, ["gap-dense"], tmp_path / "pooled", epochs=10, verbose=False).results
    assert not result.streamed
    test = read_features(str(features_dir / "test.h5"))
    clf = load_classifier(result.folder)
    assert clf.model.input_shape[1:] == test.features.shape[1:]  # the whole head, its pooling included
    got = classifier_proba(clf, test.features)
    rows = csv.DictReader(open(Path(result.folder) / "predictions.csv"))
    recorded = np.array([[float(row[c]) for c in clf.class_names] for row in rows if row["split"] == "test"])
    np.testing.assert_allclose(got, recorded, atol=1e-5)
    fs, cfg = open_feature_set(features_dir), clf.manifest.config
    keras.utils.set_random_seed(cfg["seed"])
    on_grid = build_head("gap-dense", fs.feature_shape, 2, cfg["units"], cfg["dropout"])
    fit_head(on_grid, 2, cfg, fs.load("train"), fs.load("validation"), streamed=False, fs=fs, block_rows=64)
    np.testing.assert_allclose(got, proba(on_grid, test.features), atol=1e-3)


@pytest.mark.pure
def test_out_of_core_refuses_in_memory_only_classifiers(tiny_features_dir, tmp_path):
    from bneck.features import ConfigError

    with pytest.raises(ConfigError, match="needs its features in memory"):
        train(tiny_features_dir, ["logreg", "svm"], tmp_path / "m", verbose=False, max_memory=1000)
    assert not (tmp_path / "m").exists()  # before any fit: logreg was not trained first
    with pytest.raises(ConfigError, match="at least one byte"):
        train(tiny_features_dir, ["logreg"], tmp_path / "m", verbose=False, max_memory="0.5")


@pytest.mark.pure
def test_a_neighbour_grid_never_asks_for_more_neighbours_than_a_fold_holds(tiny, tmp_path):
    """knn's grid goes to 21 neighbours; k-fold on 24 images fits on 16: scikit-learn failed those
    candidates, each with a traceback (issue 28's attack). Warnings fail this test (pyproject)."""
    data = make_images(tmp_path / "data", 6)
    extract(data, tmp_path / "f", cache_dir=tmp_path / "c", verbose=False, **tiny)
    board = train(tmp_path / "f", ["knn"], tmp_path / "m", search="kfold", folds=3, verbose=False)
    chosen = load_classifier(board.results[0].folder).manifest.search["best_params"]
    assert chosen["clf__n_neighbors"] <= 15


def test_predict_on_images_equals_evaluate_on_their_features(features_dir, image_root, tmp_path):
    train(features_dir, ["dense", "logreg"], tmp_path / "m", verbose=False, epochs=5)
    f = read_features(str(features_dir / "test.h5"))
    (image_root / "broken.jpg").write_bytes(b"garbage")
    inputs = [str(image_root / p) for p in f.paths[:6]] + [
        str(image_root / "broken.jpg"),
        str(image_root / "missing.jpg"),
    ]
    for name in ("dense", "logreg"):
        clf = load_classifier(str(tmp_path / "m" / name))
        expected = classifier_proba(clf, f.features[:6])
        rows = predict_images(str(tmp_path / "m" / name), inputs)
        got = np.array([[r["probabilities"][c] for c in clf.class_names] for r in rows[:6]])
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert rows[6]["error"].startswith("not a recognised image")
        assert rows[7]["error"] == "no such file or folder"
        metrics = evaluate(str(tmp_path / "m" / name), str(features_dir / "test.h5"))
        clf_acc = float((classifier_proba(clf, f.features).argmax(1) == f.labels).mean())
        assert metrics["accuracy"] == pytest.approx(clf_acc)
        assert clf_acc > 0.6


@pytest.mark.pure
def test_bad_options_are_clear(tiny_features_dir, tmp_path):
    from bneck.features import ConfigError

    for kwargs, message in (
        (dict(classifiers=["xgboost"]), "classifier must be one of"),
        (dict(classifiers=["dense"], optimizer="lbfgs"), "optimizer must be one of"),
        (dict(classifiers=["dense"], epochs=0), "--epochs must be an integer >= 1"),
        (dict(classifiers=["dense"], dropout=1.5), "--dropout must be a finite number >= 0 and < 1"),
        (dict(classifiers=["dense"], lr=float("inf")), "--lr must be a finite number > 0"),
        (dict(classifiers=["dense"], seed=-1), "--seed must be an integer >= 0"),
        (dict(classifiers=["logreg"], folds=1), "--folds must be an integer >= 2"),
        (dict(classifiers=["logreg"], pca=-3), "--pca must be a finite number > 0"),
        (dict(classifiers=["dense"], colour="red"), "unexpected keyword argument 'colour'; its train options are"),
    ):
        names = kwargs.pop("classifiers")
        with pytest.raises(ConfigError, match=message):
            train(tiny_features_dir, names, tmp_path / "m", verbose=False, **kwargs)
    with pytest.raises(FeatureFileError, match="validation.h5 not found"):
        only_train = tmp_path / "only"
        only_train.mkdir()
        os.symlink(tiny_features_dir / "train.h5", only_train / "train.h5")
        train(only_train, ["logreg"], tmp_path / "m", verbose=False)
    with h5py.File(tiny_features_dir / "train.h5", "r") as h:
        assert h.attrs["complete"]


@pytest.mark.pure
@pytest.mark.parametrize("shape, n_classes", [((7, 7, 1280), 2), ((7, 7, 256), 8), ((4, 4, 512), 2), ((2048,), 3)])
def test_dense_on_a_large_grid_is_told_its_weights_and_the_pooled_head(shape, n_classes):
    """The note's weight counts are the heads' own (counted by Keras), and it appears exactly from
    LARGE_DENSE_INPUTS flattened inputs on a grid."""
    from bneck.pipeline.training.heads import LARGE_DENSE_INPUTS, build_head, large_dense_note

    note = large_dense_note(shape, 256, n_classes)
    large = len(shape) == 3 and int(np.prod(shape)) >= LARGE_DENSE_INPUTS
    assert bool(note) == large
    if large:
        dense = build_head("dense", shape, n_classes, 256, 0.5).count_params()
        pooled = build_head("gap-dense", shape, n_classes, 256, 0.5).count_params()
        assert f"{dense / 1e6:.1f} M weights" in note and f"{pooled:,} weights" in note
        assert f"{int(np.prod(shape)):,} inputs" in note and "gap-dense" in note


@pytest.mark.pure
def test_training_dense_on_a_large_grid_says_so_before_it_starts(tiny, tmp_path, caplog):
    data = make_images(tmp_path / "data", 2)
    # the tiny backbone at MOBILENET's 224 px: the same 7x7x256 grid
    extract(data, tmp_path / "features", verbose=False, **dict(tiny, size=224))
    with caplog.at_level("INFO", logger="bneck.pipeline.training.stage"):
        train(tmp_path / "features", ["dense"], tmp_path / "models", epochs=1, verbose=True)
    said = caplog.text
    assert said.index("training dense") < said.index("note: dense flattens the 7x7x256 grid into 12,544 inputs")
