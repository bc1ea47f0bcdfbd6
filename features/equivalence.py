"""When two sets of feature rows are "the same numbers": one measure, one tolerance, used everywhere.

Runtimes (TensorFlow, OpenVINO fp32, Ray workers), batch compositions and recomputed
cache rows never agree to the last bit (fused kernels sum in other orders), so rows
are compared per image: the largest absolute difference in a row, relative to the
largest magnitude in the reference row. Rows within ``TOLERANCE`` of each other may
share a cache key; rows beyond it may not.
"""
from __future__ import annotations

import numpy as np

# Measured here: TensorFlow against OpenVINO fp32 (f32 hint) differs by about 2e-6
# relative on MobileNet-0.25, other batch compositions by about 1e-5; bf16 by 5e-2
# and more. 1e-3 tells the first two from the third with room on both sides.
TOLERANCE = 1e-3


def relative_differences(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return, per row, max |candidate - reference| / max |reference| (rows flattened)."""
    a = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    b = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if a.shape != b.shape:
        raise ValueError(f"rows of shape {a.shape} and {b.shape} cannot be compared")
    scale = np.abs(b).max(axis=1)
    floor = max(float(scale.max(initial=0.0)) * 1e-6, 1e-30)  # an all-zero reference row
    return np.abs(a - b).max(axis=1) / np.maximum(scale, floor)


def max_relative_difference(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Return the largest per-row relative difference (0.0 for no rows)."""
    diffs = relative_differences(candidate, reference)
    return float(diffs.max(initial=0.0))
