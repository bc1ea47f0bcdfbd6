"""Test inputs made on the spot, so the pure tests need nothing from ../shared.

``make_images`` writes JPEGs that look like a small two-class set; ``write_tiny_weights``
writes random MobileNet weights whose batch-norm statistics are set from generated images.
(Keras' own random initialisation leaves MobileNet's output near 1e-17: 27 batch
normalisations with unit statistics shrink it layer by layer, and features that small make
every dense head predict one class.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_SIZE = 64


def make_images(
    dest: Path, per_class: int, splits=("train", "validation", "test"), offset: int = 0, classes=("cats", "dogs")
) -> Path:
    """Write ``per_class`` generated JPEGs per class and split into ``dest``; returns ``dest``.

    Named like the real set (``cat.7.jpg``), of varied sizes, and different per class (stripes of
    one orientation and palette per class, plus noise), so a classifier can tell them apart. The
    same (split, class, index) always gives the same bytes.
    """
    from PIL import Image

    for split_index, split in enumerate(splits):
        for class_index, cls in enumerate(classes):
            out = dest / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for i in range(offset, offset + per_class):
                rng = np.random.default_rng([split_index, class_index, i])
                width, height = (int(v) for v in rng.integers(48, 160, size=2))
                image = _striped(rng, width, height, class_index, len(classes))
                Image.fromarray(image).save(out / f"{cls.rstrip('s')}.{i}.jpg", quality=90)
    return dest


def _striped(rng, width: int, height: int, class_index: int, n_classes: int) -> np.ndarray:
    """An RGB uint8 image: stripes whose orientation and hue say the class, plus noise."""
    angle = np.pi * class_index / n_classes
    ys, xs = np.mgrid[0:height, 0:width]
    phase = (np.cos(angle) * xs + np.sin(angle) * ys) / rng.uniform(4, 9)
    wave = (np.sin(phase + rng.uniform(0, 6.28)) + 1) / 2
    hue = np.array([np.cos(angle), np.cos(angle + 2.1), np.cos(angle + 4.2)]) * 80 + 128
    image = wave[..., None] * hue + rng.normal(0, 18, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def cli_args(options: dict) -> list[str]:
    """Extract options (``tiny``, the conftest fixture) as command-line flags: ``--size 64`` ..."""
    return [text for name, value in options.items() for text in (f"--{name}", str(value))]


def write_tiny_weights(path: Path) -> Path:
    """Write a MobileNet v1 (alpha 0.25) ``.weights.h5`` with seeded random kernels and batch-norm
    statistics measured on 32 generated images, layer by layer; returns ``path``."""
    import keras
    from PIL import Image

    images = sorted(make_images(path.parent / "calibration", 16, splits=("train",)).rglob("*.jpg"))
    side = (TINY_SIZE, TINY_SIZE)
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize(side), dtype="float32") for p in images])
    x = x / 127.5 - 1  # MobileNet's preprocessing
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_shape=(*side, 3))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            seen = np.asarray(keras.Model(model.input, layer.input)(x, training=False))
            layer.moving_mean.assign(seen.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(seen.var(axis=(0, 1, 2)))
    model.save_weights(path)
    return path


def keras_reference_features(name: str, size: int, weights_path: Path, data: Path, paths: list[str]) -> np.ndarray:
    """Backbone ``name``'s features as the Keras documentation computes them (its constructor with seeded
    random weights, ``preprocess_input``, ``predict``) for ``data``'s images at ``paths``, averaged over
    positions; the weights are saved to ``weights_path`` for bneck to load. Not Keras' ``pooling="avg"``:
    ConvNeXt then normalises the pooled vector, not each position."""
    import importlib

    import keras
    from PIL import Image

    from bneck.features.backbones.catalog import catalog

    record = catalog()[name]
    keras.utils.set_random_seed(1)
    model = getattr(keras.applications, record["constructor"])(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    model.save_weights(weights_path)
    images = [Image.open(data / p).convert("RGB").resize((size, size), Image.BILINEAR) for p in paths]
    x = np.stack([np.asarray(im, dtype="float32") for im in images])
    preprocess = importlib.import_module(f"keras.applications.{record['module']}").preprocess_input
    return model.predict(preprocess(x), verbose=0).mean(axis=(1, 2))
