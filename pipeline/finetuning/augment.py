"""The training-time augmentation layer: one random affine warp per image (see features.augment)."""
from __future__ import annotations

import keras

from features.augment import affine_transforms, warp
from features.tfimport import import_tensorflow


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
