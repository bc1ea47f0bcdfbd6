"""The reference augmentations as ONE random affine warp per image.

Keras' RandomRotation, RandomTranslation, RandomShear and RandomZoom each resample
the whole batch (four bilinear passes, plus the flip); on a CPU that cost more
than MobileNet-0.25's forward pass. Composing rotation, shift, shear, zoom and
flip into one matrix per image and resampling once (``ImageProjectiveTransformV3``,
bilinear, fill 'nearest', the same kernel those layers use) gives the same family
of images for a fraction of the time.
"""
from __future__ import annotations

import math

import keras

from features.tfimport import import_tensorflow


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
    return tf.stack([linear[:, 0, 0], linear[:, 0, 1], tx, linear[:, 1, 0], linear[:, 1, 1], ty,
                     zeros, zeros], axis=-1)


def warp(tf, images, transforms):
    """Resample ``images`` (n, h, w, c) float through ``transforms`` (bilinear, fill nearest)."""
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="NEAREST")


class RandomAffine(keras.layers.Layer):
    """Random rotation, shift, shear, zoom and horizontal flip in one warp; identity unless training."""

    def __init__(self, rotation=40.0, shift=0.2, shear=0.2, zoom=0.2, flip=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.params = {"rotation": float(rotation), "shift": float(shift), "shear": float(shear),
                       "zoom": float(zoom), "flip": bool(flip)}
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        tf = import_tensorflow()
        n = tf.shape(inputs)[0]

        def uniform(lo, hi):
            return keras.random.uniform([n], lo, hi, seed=self.seed_generator)

        transforms = affine_transforms(tf, n, inputs.shape[1], inputs.shape[2], self.params, uniform)
        return warp(tf, inputs, transforms)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.params, "seed": self.seed}
