"""``--format openvino``: OpenVINO IR converted from a SavedModel, compiled for the CPU in f32.

OpenVINO must be told to keep fp32: on CPUs with native bf16 it would otherwise compute in
bf16 and the probabilities move. The setting is recorded in ``bneck-export.json``
(``runtime_settings``) for the service to pass, and the check compiles with it too.
"""

from __future__ import annotations

import numpy as np

from bneck.core.extras import import_optional
from bneck.pipeline.export.formats.registry import ExportFormat, register_format
from bneck.pipeline.export.formats.savedmodel import saved_model_beside

COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def _openvino():
    # bneck's import silences OpenVINO's telemetry: no network request bneck was not asked for
    return import_optional("openvino", "--format openvino", "openvino", "openvino", "--format keras")


def write(model, path: str) -> None:
    """Write ``model`` as OpenVINO IR at ``path`` (``model.xml``, weights beside it in ``model.bin``)."""
    ov = _openvino()
    with saved_model_beside(model, path) as saved:
        ov.save_model(ov.convert_model(saved), path, compress_to_fp16=False)


def runner(path: str):
    """Return ``run(uint8 images) -> probabilities``: the IR compiled by OpenVINO with ``COMPILE_CONFIG``."""
    compiled = _openvino().Core().compile_model(path, "CPU", COMPILE_CONFIG)
    return lambda x: np.asarray(compiled(x)[0])


OPENVINO = register_format(
    ExportFormat(
        "openvino",
        "model.xml",
        write,
        runner,
        needs=("openvino",),
        extra="openvino",
        runtime_settings={"openvino_compile_config": COMPILE_CONFIG},
    )
)
