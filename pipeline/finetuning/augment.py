"""Stage 3's augmentation: one random affine warp per image, applied to training batches only.

The warp itself (and the seeded per-image views the frozen-trunk cache stores) is
``features.augment``, because cached view rows are keyed by it; the options and their
checks are ``options.augmentation_params``; this is the Keras layer.
"""

from __future__ import annotations

import keras

from bneck.core.tfimport import import_tensorflow
from bneck.features.views.warp import affine_transforms, warp


class RandomAffine(keras.layers.Layer):
    """Random rotation, shift, shear, zoom and horizontal flip in one warp; identity unless training."""

    def __init__(self, rotation=40.0, shift=0.2, shear=0.2, zoom=0.2, flip=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.params = {
            "rotation": float(rotation),
            "shift": float(shift),
            "shear": float(shear),
            "zoom": float(zoom),
            "flip": bool(flip),
        }
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


def augmentation_layer(augment: dict, seed: int):
    """Return one seeded RandomAffine warp (fill 'nearest'), or None when all are off."""
    from bneck.pipeline.finetuning.options import augmentation_params

    params = augmentation_params(augment)
    if not any(params.values()):
        return None
    return RandomAffine(**params, seed=seed, name="aug_affine")
