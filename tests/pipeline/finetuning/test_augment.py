"""The fused affine augmentation: exact geometry on simple cases, identity outside training."""

from __future__ import annotations

import numpy as np
import pytest

from bneck.core.tfimport import import_tensorflow
from bneck.features.views.warp import affine_transforms, warp
from bneck.pipeline.finetuning.augment import RandomAffine

pytestmark = pytest.mark.pure

OFF = dict(rotation=0.0, shift=0.0, shear=0.0, zoom=0.0, flip=False)


def _images(n=6, size=32):
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_identity_outside_training_and_when_all_off():
    x = _images()
    np.testing.assert_array_equal(RandomAffine(seed=1)(x, training=False), x)
    np.testing.assert_allclose(np.asarray(RandomAffine(**OFF, seed=1)(x, training=True)), x, atol=1e-3)


def test_flip_only_gives_exact_mirrors():
    x = _images(16)
    y = np.asarray(RandomAffine(**{**OFF, "flip": True}, seed=3)(x, training=True))
    flipped = [np.allclose(b, a[:, ::-1], atol=1e-3) for a, b in zip(x, y)]
    kept = [np.allclose(b, a, atol=1e-3) for a, b in zip(x, y)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 16  # about half, seeded


def test_shift_moves_content_by_whole_pixels():
    tf = import_tensorflow()
    x = _images(1)
    # every draw at its maximum: a shift of +4 px in x and y, output(y, x) = input(y + 4, x + 4)
    transforms = affine_transforms(tf, 1, 32, 32, {**OFF, "shift": 4 / 32}, lambda lo, hi: tf.fill([1], hi))
    y = np.asarray(warp(tf, tf.constant(x), transforms))
    np.testing.assert_allclose(y[0, :-4, :-4], x[0, 4:, 4:], atol=1e-3)
    np.testing.assert_allclose(y[0, :-4, -4:], np.repeat(x[0, 4:, -1:], 4, axis=1), atol=1e-3)  # fill nearest


def test_same_seed_same_views_and_training_changes_images():
    x = _images()
    a = np.asarray(RandomAffine(seed=7)(x, training=True))
    b = np.asarray(RandomAffine(seed=7)(x, training=True))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - x).mean() > 5


def test_views_are_a_pure_function_of_content_seed_and_view():
    from bneck.features.views.warp import view_transforms

    params = dict(rotation=40.0, shift=0.2, shear=0.2, zoom=0.2, flip=True)
    shas = ["a" * 64, "b" * 64, "c" * 64]
    one = np.asarray(view_transforms(shas, 1, 0, params, 224, 224))
    again = np.asarray(view_transforms(list(reversed(shas)), 1, 0, params, 224, 224))[::-1]
    np.testing.assert_array_equal(one, again)  # order and batch do not matter
    assert not np.allclose(one[0], one[1])  # content matters
    assert not np.allclose(one, np.asarray(view_transforms(shas, 2, 0, params, 224, 224)))
    assert not np.allclose(one, np.asarray(view_transforms(shas, 1, 1, params, 224, 224)))
    identity = np.asarray(view_transforms(shas, 0, 0, params, 224, 224))
    np.testing.assert_array_equal(identity, np.tile([1, 0, 0, 0, 1, 0, 0, 0], (3, 1)))
    tf = import_tensorflow()
    x = _images(3, 224)
    np.testing.assert_allclose(np.asarray(warp(tf, tf.constant(x), identity)), x, atol=1e-3)
