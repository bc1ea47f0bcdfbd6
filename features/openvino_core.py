"""OpenVINO, imported on demand and compiled with pinned numbers.

OpenVINO's CPU plugin, left to itself, runs float models in bf16 on CPUs with native
bf16 (AVX512_BF16, AMX) and in f32 elsewhere: the same model gives other numbers on
another machine. Every bneck model is compiled with an explicit inference precision.
"""
from __future__ import annotations

from .optional import import_optional

# fp32 and int8 models run their float parts in f32 on every CPU.
INFERENCE_PRECISION = "f32"


def import_openvino():
    """Return the ``openvino`` module; raises ConfigError saying how to install it."""
    return import_optional("openvino", "--runtime openvino", "openvino", "openvino", "--runtime tensorflow")


def compile_cpu(ov, model, inference_precision: str = INFERENCE_PRECISION):
    """Compile an OpenVINO model for the CPU with a pinned inference precision."""
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": inference_precision})
