"""The generated inputs of the pure tests are real JPEGs and a real, usable backbone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bneck.features import extract, read_features
from tests.generated import TINY_SIZE, make_images

pytestmark = pytest.mark.pure


def test_generated_images_are_jpegs_that_differ_by_class_and_repeat_exactly(tmp_path):
    first = make_images(tmp_path / "a", 3, splits=("train",))
    again = make_images(tmp_path / "b", 3, splits=("train",))
    files = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert [str(p) for p in files] == [f"train/cats/cat.{i}.jpg" for i in range(3)] + [
        f"train/dogs/dog.{i}.jpg" for i in range(3)
    ]
    assert all((first / p).read_bytes() == (again / p).read_bytes() for p in files)
    means = {}
    for cls in ("cats", "dogs"):
        pixels = [np.asarray(Image.open(p).convert("RGB"), dtype=float) for p in (first / "train" / cls).iterdir()]
        assert all(Image.open(p).format == "JPEG" for p in (first / "train" / cls).iterdir())
        means[cls] = np.mean([p.reshape(-1, 3).mean(axis=0) for p in pixels], axis=0)
    assert np.abs(means["cats"] - means["dogs"]).max() > 40  # the palettes differ


def test_the_tiny_backbone_gives_features_of_a_usable_scale_equal_to_plain_keras(tmp_path, tiny):
    import keras

    data = make_images(tmp_path / "data", 4, splits=("train",))
    extract(data, tmp_path / "out", pool="avg", verbose=False, **tiny)
    got = read_features(tmp_path / "out" / "train.h5")
    model = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=tiny["weights"], input_shape=(TINY_SIZE, TINY_SIZE, 3), pooling="avg"
    )
    images = [Image.open(data / p).convert("RGB") for p in got.paths]
    x = np.stack([np.asarray(im.resize((TINY_SIZE, TINY_SIZE), Image.BILINEAR), dtype="float32") for im in images])
    want = model.predict(x / 127.5 - 1, verbose=0)
    assert 0.05 < float(np.std(got.features)) < 50  # Keras' own random init gives about 1e-17
    np.testing.assert_allclose(got.features, want, rtol=1e-3, atol=1e-4)
