"""``--format onnx``: written by Keras through tf2onnx, run by ONNX Runtime (the ``export`` extra)."""

from __future__ import annotations

import warnings

import numpy as np

from bneck.pipeline.export.formats.registry import ExportFormat, register_format


def write(model, path: str) -> None:
    """Write ``model`` as a ``.onnx`` file at ``path``."""
    model(np.zeros((1, *model.input_shape[1:]), np.uint8))  # Keras exports ONNX only from a called model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # tf2onnx's use of np.object
        model.export(path, format="onnx", verbose=False)


def runner(path: str):
    """Return ``run(uint8 images) -> probabilities``: the file run by ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


ONNX = register_format(
    ExportFormat("onnx", "model.onnx", write, runner, needs=("tf2onnx", "onnx", "onnxruntime"), extra="export")
)
