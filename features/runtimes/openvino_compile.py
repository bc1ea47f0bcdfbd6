"""OpenVINO, imported on demand and compiled with pinned numbers.

OpenVINO's CPU plugin, left to itself, runs float models in bf16 on CPUs with native
bf16 (AVX512_BF16, AMX) and in f32 elsewhere: the same model gives other numbers on
another machine. Every bneck model is compiled with an explicit inference precision
and an explicit performance mode (``MODE``, part of what a check records: a model
checked when run one way is not taken as checked when run another way).

The mode is latency: one infer request on every core. Throughput streams (a batch
split over parallel requests) were measured in the extraction loop, where decoding
shares the cores, and were not faster: 3.46 s against 3.30 s for 2,000 MobileNet-0.25
images, mean of three runs each (AMD EPYC Zen 4, 2 cores).
"""

from __future__ import annotations

import numpy as np

from bneck.core.extras import import_optional

# fp32 and int8 models run their float parts in f32 on every CPU.
INFERENCE_PRECISION = "f32"
# How models are compiled and run; a check made in another mode does not vouch for this one.
MODE = "latency"


def import_openvino():
    """Return the ``openvino`` module; raises ConfigError saying how to install it."""
    return import_optional("openvino", "--runtime openvino", "openvino", "openvino", "--runtime tensorflow")


def compile_cpu(ov, model, inference_precision: str = INFERENCE_PRECISION) -> PinnedModel:
    """Compile an OpenVINO model for the CPU with a pinned inference precision and performance mode."""
    config = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": MODE.upper()}
    return PinnedModel(ov.Core().compile_model(model, "CPU", config))


class PinnedModel:
    """Callable: a batch -> the model's first output for it (a NumPy array of its own)."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def output(self, index: int):
        return self.compiled.output(index)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(images)})
        return np.array(self.request.get_output_tensor(0).data, copy=True)
