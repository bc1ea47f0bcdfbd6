"""Stage 1 end to end: on generated JPEGs and the tiny random-weights MobileNet-0.25 (``tiny``), and, where
the real ImageNet weights are the point, on real JPEGs and those weights."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from bneck.features import extract, read_features
from tests.conftest import MOBILENET, MOBILENET_WEIGHTS
from tests.generated import make_images


def _independent_features(paths, root):
    """base(preprocess(decoded image)) computed with plain Keras calls, not bneck's code."""
    import keras

    base = keras.applications.MobileNet(
        alpha=0.25, include_top=False, input_shape=(224, 224, 3), weights=str(MOBILENET_WEIGHTS)
    )
    images = np.stack(
        [
            keras.utils.img_to_array(
                keras.utils.load_img(os.path.join(root, p), target_size=(224, 224), interpolation="bilinear")
            )
            for p in paths
        ]
    )
    return base.predict(keras.applications.mobilenet.preprocess_input(images), verbose=0)


def test_features_equal_an_independent_keras_computation(small_data, tmp_path):
    report = extract(small_data, tmp_path / "out", splits=["train"], verbose=False, **MOBILENET)
    f = read_features(str(tmp_path / "out" / "train.h5"))
    assert f.features.shape == (12, 7, 7, 256)
    # Every row, in file order (the first batches are decoded while the network is still being built).
    expected = _independent_features(f.paths, small_data)
    # Graph-compiled (fused) kernels differ from eager ones in the last float bits.
    np.testing.assert_allclose(f.features, expected, atol=1e-4, rtol=1e-5)
    assert report.forward_images == 12


def test_file_layout_labels_order_and_attributes(small_data, tmp_path):
    extract(small_data, tmp_path / "out", verbose=False, **MOBILENET)
    assert sorted(os.listdir(tmp_path / "out")) == [".bneck-folder.json", "test.h5", "train.h5", "validation.h5"]
    f = read_features(str(tmp_path / "out" / "validation.h5"))
    assert f.paths == sorted(f.paths)
    assert all(p.startswith("validation/") for p in f.paths)
    assert [f.class_names[label] for label in f.labels] == [p.split("/")[1] for p in f.paths]
    import hashlib

    assert f.sha256[0] == hashlib.sha256((small_data / f.paths[0]).read_bytes()).hexdigest()
    for attr in (
        "backbone",
        "weights",
        "weights_sha256",
        "layer",
        "pool",
        "input_size",
        "preprocessing",
        "interpolation",
        "dtype",
        "extractor_key",
        "schema_version",
        "created_utc",
        "bneck_version",
        "tensorflow_version",
        "keras_version",
        "h5py_version",
        "numpy_version",
        "complete",
    ):
        assert attr in f.attrs, attr
    assert f.attrs["weights"] == "imagenet"
    assert f.attrs["weights_sha256"] == "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"
    assert f.class_names == ["cats", "dogs"]
    assert f.quarantine == []
    with h5py.File(tmp_path / "out" / "validation.h5") as h:
        assert h["features"].chunks is not None
        assert h["quarantine"].shape == (0, 2)


@pytest.mark.pure
def test_rerun_on_unchanged_data_never_builds_the_network(tiny_data, tmp_path, tiny):
    first = extract(tiny_data, tmp_path / "out", verbose=False, **tiny)
    assert first.forward_images == 36
    before = read_features(str(tmp_path / "out" / "train.h5"))
    again = extract(tiny_data, tmp_path / "out", verbose=False, **tiny)
    assert again.model_built is False
    assert again.forward_images == 0
    assert [s.reused for s in again.splits] == [12, 12, 12]
    np.testing.assert_array_equal(read_features(str(tmp_path / "out" / "train.h5")).features, before.features)


@pytest.mark.pure
def test_adding_and_changing_images_computes_exactly_those(tiny_data, tmp_path, tiny):
    extract(tiny_data, tmp_path / "out", verbose=False, **tiny)
    make_images(tiny_data, 2, splits=("train",), offset=100, classes=("cats",))  # cat.100.jpg, cat.101.jpg
    # "change" an image: same name, other content
    other = make_images(tmp_path / "other", 1, splits=("train",), offset=200)
    os.replace(other / "train" / "dogs" / "dog.200.jpg", tiny_data / "train" / "dogs" / "dog.0.jpg")
    report = extract(tiny_data, tmp_path / "out", verbose=False, **tiny)
    assert report.forward_images == 3
    train = next(s for s in report.splits if s.split == "train")
    assert (train.images, train.computed, train.reused) == (14, 3, 11)


@pytest.mark.pure
def test_renamed_moved_and_cross_project_images_are_reused(tiny_data, tmp_path, tiny):
    extract(tiny_data, tmp_path / "out", verbose=False, **tiny)
    os.rename(tiny_data / "train" / "cats" / "cat.0.jpg", tiny_data / "train" / "cats" / "renamed.jpg")
    os.makedirs(tiny_data / "train" / "cats" / "nested")
    os.rename(tiny_data / "train" / "cats" / "cat.1.jpg", tiny_data / "train" / "cats" / "nested" / "x.JPG")
    moved = extract(tiny_data, tmp_path / "out", verbose=False, **tiny)
    assert moved.forward_images == 0 and not moved.model_built
    assert "train/cats/nested/x.JPG" in read_features(str(tmp_path / "out" / "train.h5")).paths

    # A second project holding 4 of the same images and 2 new ones per class.
    other = make_images(tmp_path / "other", 6, splits=("train",), offset=2)
    report = extract(other, tmp_path / "other_out", verbose=False, **tiny)
    assert report.forward_images == 4
    a = read_features(str(tmp_path / "out" / "train.h5"))
    b = read_features(str(tmp_path / "other_out" / "train.h5"))
    shared = set(a.sha256) & set(b.sha256)
    assert len(shared) == 8
    for sha in shared:
        np.testing.assert_array_equal(a.features[a.sha256.index(sha)], b.features[b.sha256.index(sha)])


@pytest.mark.pure
def test_batch_size_workers_and_out_dir_do_not_invalidate_the_cache(tiny_data, tmp_path, tiny):
    extract(tiny_data, tmp_path / "a", verbose=False, batch_size=32, **tiny)
    report = extract(tiny_data, tmp_path / "b", verbose=False, batch_size=5, workers=1, **tiny)
    assert report.forward_images == 0


@pytest.mark.pure
def test_every_key_field_gets_its_own_rows(tiny_data, tmp_path, tiny):
    base = extract(tiny_data, tmp_path / "a", splits=["test"], verbose=False, **tiny)
    for change in (
        dict(pool="avg"),
        dict(dtype="float16"),
        dict(size=96),
        dict(layer="conv_pw_12_relu"),
        dict(weights="none"),
    ):
        report = extract(tiny_data, tmp_path / "b", splits=["test"], verbose=False, **{**tiny, **change})
        assert report.spec.key != base.spec.key, change
        assert report.forward_images == 12, change


def test_pool_dtype_layer_and_local_weights_path(small_data, tmp_path):
    r = extract(
        small_data,
        tmp_path / "o",
        splits=["test"],
        verbose=False,
        pool="avg",
        dtype="float16",
        **{**MOBILENET, "weights": str(MOBILENET_WEIGHTS)},
    )
    f = read_features(str(tmp_path / "o" / "test.h5"))
    assert f.features.shape == (12, 256) and f.features.dtype == np.float16
    assert f.attrs["weights"] == os.path.basename(MOBILENET_WEIGHTS)
    # a local path to the same bytes is the same extractor as "imagenet"
    same = extract(small_data, tmp_path / "p", splits=["test"], verbose=False, pool="avg", dtype="float16", **MOBILENET)
    assert same.spec.key == r.spec.key and same.forward_images == 0
    extract(
        small_data, tmp_path / "q", splits=["test"], layer="conv_pw_11_relu", pool="max", verbose=False, **MOBILENET
    )
    assert read_features(str(tmp_path / "q" / "test.h5")).features.shape == (12, 128)


@pytest.mark.pure
def test_vgg16_default_matches_reference_shape(tiny_data, tmp_path):
    extract(tiny_data, tmp_path / "o", splits=["test"], backbone="vgg16", weights="none", verbose=False)
    f = read_features(str(tmp_path / "o" / "test.h5"))
    assert f.features.shape == (12, 4, 4, 512)  # (N, 4, 4, 512) at 150x150, as in the reference
    assert f.attrs["input_size"] == 150 and f.attrs["layer"] == "block5_pool"
    assert f.attrs["weights"] == "none" and f.attrs["weights_sha256"].startswith("random-init")


@pytest.mark.pure
def test_bad_images_are_quarantined_and_the_run_completes(tiny_data, tmp_path, tiny):
    cats = tiny_data / "train" / "cats"
    (cats / "empty.jpg").write_bytes(b"")
    (cats / "noise.png").write_bytes(os.urandom(3000))
    good = (
        make_images(tmp_path / "src", 1, splits=("train",), offset=50) / "train" / "cats" / "cat.50.jpg"
    ).read_bytes()
    (cats / "truncated.jpg").write_bytes(good[: len(good) // 3])
    report = extract(tiny_data, tmp_path / "out", splits=["train"], verbose=False, **tiny)
    f = read_features(str(tmp_path / "out" / "train.h5"))
    reasons = dict(f.quarantine)
    assert set(reasons) == {"train/cats/empty.jpg", "train/cats/noise.png", "train/cats/truncated.jpg"}
    assert "truncated" in reasons["train/cats/truncated.jpg"]
    assert len(f.paths) == 12 and report.splits[0].quarantined == 3


@pytest.mark.pure
def test_extract_declares_every_option_of_its_table():
    from bneck.core.options import signature_matches
    from bneck.features.extraction.options import EXTRACT

    assert signature_matches(extract, EXTRACT) == []
