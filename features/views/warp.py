"""The reference augmentations as ONE random affine warp per image.

Keras' RandomRotation, RandomTranslation, RandomShear and RandomZoom each resample
the whole batch (four bilinear passes, plus the flip); on a CPU that cost more
than MobileNet-0.25's forward pass. Composing rotation, shift, shear, zoom and
flip into one matrix per image and resampling once (``ImageProjectiveTransformV3``,
bilinear, fill 'nearest', the same kernel those layers use) gives the same family
of images for a fraction of the time.

It lives in ``features`` because stage 3's cached augmented views are keyed and
stored like features (``view_transforms`` makes a view a pure function of the
image's content); the Keras training layer is ``pipeline.finetuning.augment.RandomAffine``.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from bneck.core.tfimport import import_tensorflow

# The view index of the horizontally flipped image (test-time augmentation): the same
# for every seed and augmentation setting.
FLIP_VIEW = -1

# The order in which affine_transforms draws its uniforms; view_transforms feeds it
# per-image draws in this order.
N_DRAWS = 8


def affine_transforms(tf, n, height: int, width: int, params: dict, uniform):
    """Return (n, 8) projective transforms (output -> input pixel) for random affine warps.

    ``uniform(lo, hi)`` draws n values; ``params`` holds rotation (degrees), shift,
    shear, zoom (fractions) and flip (bool).
    """
    ones, zeros = tf.ones([n]), tf.zeros([n])
    theta = uniform(-1.0, 1.0) * (params["rotation"] * math.pi / 180.0)
    shear_x, shear_y = uniform(-1.0, 1.0) * params["shear"], uniform(-1.0, 1.0) * params["shear"]
    zoom_x, zoom_y = 1.0 + uniform(-1.0, 1.0) * params["zoom"], 1.0 + uniform(-1.0, 1.0) * params["zoom"]
    shift_x = uniform(-1.0, 1.0) * params["shift"] * width
    shift_y = uniform(-1.0, 1.0) * params["shift"] * height
    flip = tf.where(uniform(0.0, 1.0) < 0.5, -ones, ones) if params["flip"] else ones

    def mat(a, b, c, d):
        return tf.reshape(tf.stack([a, b, c, d], axis=-1), [-1, 2, 2])

    rotate = mat(tf.cos(theta), -tf.sin(theta), tf.sin(theta), tf.cos(theta))
    shear = mat(ones, shear_x, shear_y, ones)
    scale = mat(zoom_x * flip, zeros, zeros, zoom_y)
    linear = tf.matmul(tf.matmul(rotate, shear), scale)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # input = linear @ (output - centre) + centre + shift
    tx = cx + shift_x - (linear[:, 0, 0] * cx + linear[:, 0, 1] * cy)
    ty = cy + shift_y - (linear[:, 1, 0] * cx + linear[:, 1, 1] * cy)
    return tf.stack([linear[:, 0, 0], linear[:, 0, 1], tx, linear[:, 1, 0], linear[:, 1, 1], ty, zeros, zeros], axis=-1)


def warp(tf, images, transforms):
    """Resample ``images`` (n, h, w, c) float through ``transforms`` (bilinear, fill nearest)."""
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def view_transforms(shas, view: int, seed: int, params: dict, height: int, width: int):
    """Return the (n, 8) transforms of augmented view ``view`` of the images ``shas``.

    Deterministic per (seed, view, image content): the same image gets the same view in
    any run, batch or order, so augmented views can be cached like features. View 0
    is the un-augmented image (identity transforms), view ``FLIP_VIEW`` its exact mirror
    image (output column x reads input column width - 1 - x).
    """
    tf = import_tensorflow()
    n = len(shas)
    if view == 0:
        return tf.constant(np.tile(np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32), (n, 1)))
    if view == FLIP_VIEW:
        return tf.constant(np.tile(np.array([-1, 0, width - 1, 0, 1, 0, 0, 0], np.float32), (n, 1)))
    draws = np.empty((n, N_DRAWS), np.float32)
    for i, sha in enumerate(shas):
        digest = hashlib.sha256(f"{seed}:{view}:{sha}".encode()).digest()
        draws[i] = np.random.default_rng(int.from_bytes(digest[:8], "little")).random(N_DRAWS)
    columns = iter(range(N_DRAWS))

    def uniform(lo, hi):
        return tf.constant(lo + (hi - lo) * draws[:, next(columns)])

    return affine_transforms(tf, n, height, width, params, uniform)
