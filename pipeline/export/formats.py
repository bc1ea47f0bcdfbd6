"""Each export format: how the deployable Keras model is written, and how that format's own
runtime runs it (used to check every export against bneck before it is kept).

The runners import only the format's runtime, never bneck, and are what the README
shows a service doing.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

FORMATS = ("keras", "savedmodel", "tflite", "onnx", "openvino")
# The file or folder each format writes inside the export folder.
MODEL_PATH = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite",
              "onnx": "model.onnx", "openvino": "model.xml"}
# What each format needs beyond bneck's own dependencies (pip extras).
NEEDS = {"onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",)}
# OpenVINO must be told to keep fp32: on CPUs with native bf16 it would otherwise compute in bf16.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def write(model, fmt: str, folder: str) -> None:
    """Write ``model`` in format ``fmt`` into ``folder``."""
    path = os.path.join(folder, MODEL_PATH[fmt])
    if fmt == "keras":
        model.save(path)
    elif fmt == "savedmodel":
        model.export(path, format="tf_saved_model", verbose=False)
    elif fmt == "onnx":
        import warnings

        model(np.zeros((1, *model.input_shape[1:]), np.uint8))  # Keras exports ONNX only from a called model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # tf2onnx's use of np.object
            model.export(path, format="onnx", verbose=False)
    else:
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            saved = os.path.join(tmp, "saved_model")
            model.export(saved, format="tf_saved_model", verbose=False)
            _from_saved_model(saved, fmt, path)


def _from_saved_model(saved: str, fmt: str, path: str) -> None:
    if fmt == "tflite":
        import tensorflow as tf

        with open(path, "wb") as handle:
            handle.write(tf.lite.TFLiteConverter.from_saved_model(saved).convert())
    else:
        from bneck.features.runtimes.openvino_compile import import_openvino

        ov = import_openvino()
        ov.save_model(ov.convert_model(saved), path, compress_to_fp16=False)


def runner(fmt: str, folder: str):
    """Return ``run(uint8 images) -> probabilities`` for the export in ``folder``, via the format's runtime."""
    path = os.path.join(folder, MODEL_PATH[fmt])
    if fmt == "keras":
        import keras

        model = keras.saving.load_model(path, safe_mode=True)
        return lambda x: np.asarray(model(x, training=False))
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # kept referenced: its variables live as long as it does
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    if fmt == "tflite":
        return _tflite(path)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    from bneck.features.runtimes.openvino_compile import import_openvino

    compiled = import_openvino().Core().compile_model(path, "CPU", OPENVINO_CONFIG)
    return lambda x: np.asarray(compiled(x)[0])


def _tflite(path: str):
    import warnings

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
