"""``--format keras``: the Keras v3 file, read back by Keras with ``safe_mode``."""

from __future__ import annotations

import numpy as np

from bneck.pipeline.export.formats.registry import ExportFormat, register_format


def write(model, path: str) -> None:
    """Write ``model`` as a ``.keras`` file at ``path``."""
    model.save(path)


def runner(path: str):
    """Return ``run(uint8 images) -> probabilities``: the file loaded by Keras alone."""
    import keras

    model = keras.saving.load_model(path, safe_mode=True)
    return lambda x: np.asarray(model(x, training=False))


KERAS = register_format(ExportFormat("keras", "model.keras", write, runner))
