"""``--format savedmodel``: a TensorFlow SavedModel (``serve`` signature), as TF Serving loads it.

``saved_model_beside`` is also the first step of the formats converted from a SavedModel
(tflite, openvino).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from bneck.pipeline.export.formats.registry import ExportFormat, register_format


def write(model, path: str) -> None:
    """Write ``model`` as a SavedModel folder at ``path``."""
    model.export(path, format="tf_saved_model", verbose=False)


@contextlib.contextmanager
def saved_model_beside(model, path: str):
    """Yield the path of ``model`` written as a SavedModel in a temporary folder beside ``path``
    (inside the staged export folder, so a killed export leaves nothing elsewhere); removed after."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path) or ".") as tmp:
        saved = os.path.join(tmp, "saved_model")
        write(model, saved)
        yield saved


def runner(path: str):
    """Return ``run(uint8 images) -> probabilities``: the folder loaded by ``tf.saved_model``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # kept referenced: its variables live as long as it does
    return lambda x: loaded.serve(tf.constant(x)).numpy()


SAVEDMODEL = register_format(ExportFormat("savedmodel", "saved_model", write, runner))
