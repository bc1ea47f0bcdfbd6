"""``--format tflite``: converted from a SavedModel, run by the TFLite interpreter."""

from __future__ import annotations

import warnings

from bneck.pipeline.export.formats.registry import ExportFormat, register_format
from bneck.pipeline.export.formats.savedmodel import saved_model_beside


def write(model, path: str) -> None:
    """Write ``model`` as a ``.tflite`` flatbuffer at ``path``."""
    import tensorflow as tf

    with saved_model_beside(model, path) as saved:
        converted = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
    with open(path, "wb") as handle:
        handle.write(converted)


def runner(path: str):
    """Return ``run(uint8 images) -> probabilities``: the file run by ``tf.lite.Interpreter``."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice about ai_edge_litert
        interpreter = tf.lite.Interpreter(model_path=path)

    def run(x):
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()

    return run


TFLITE = register_format(ExportFormat("tflite", "model.tflite", write, runner))
