"""When two sets of feature rows are "the same numbers": one measure, one tolerance, used everywhere.

Runtimes (TensorFlow, OpenVINO fp32, Ray workers), batch compositions and recomputed
cache rows never agree to the last bit (fused kernels sum in other orders), so rows
are compared per image: the largest absolute difference in a row, relative to the
largest magnitude in the reference row. Rows within ``TOLERANCE`` of each other may
share a cache key; rows beyond it may not.
"""

from __future__ import annotations

import numpy as np

from bneck.core.errors import ConfigError

# Two thresholds, because a runtime is checked on a sample and then runs on every image:
#
# * TOLERANCE: rows under one cache key may differ by this much, on any image (what
#   `bneck cache verify --recompute` allows);
# * CHECK_TOLERANCE: a runtime is trusted to share a key only if, on its check sample, it
#   stays this far inside TOLERANCE. A sample's worst row is a typical row; over thousands
#   of images the worst is some 25 times larger.
#
# Measured here (MobileNet-0.25, per-row max): OpenVINO fp32 with the f32 hint against
# TensorFlow, 3.3e-5 to 4.5e-5 on 8-image samples, but over 4,000 real images 4.8e-4 at the
# 99.9th percentile and 1.1e-3 at the worst (test/cats/cat.1976.jpg); other batch
# compositions about 1e-5; Ray workers 4.2e-5; OpenVINO with its bf16 hint 1.0 (an
# activation of 6 read as 0). A runtime passing at 1e-4 on its sample leaves 50x room to
# the key's 5e-3; bf16-like drift is refused by both.
TOLERANCE = 5e-3
CHECK_TOLERANCE = 1e-4


def relative_differences(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return, per row, max |candidate - reference| / max |reference| (rows flattened).

    A row with NaN or infinity on either side differs infinitely: it never hides among
    the others, and never makes the others look equal.
    """
    a = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    b = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if a.shape != b.shape:
        raise ValueError(f"rows of shape {a.shape} and {b.shape} cannot be compared")
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    a, b = np.where(finite[:, None], a, 0.0), np.where(finite[:, None], b, 0.0)
    scale = np.abs(b).max(axis=1, initial=0.0)
    floor = max(float(scale.max(initial=0.0)) * 1e-6, 1e-30)  # an all-zero reference row
    diffs = np.abs(a - b).max(axis=1, initial=0.0) / np.maximum(scale, floor)
    return np.where(finite, diffs, np.inf)


def max_relative_difference(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Return the largest per-row relative difference (0.0 for no rows)."""
    diffs = relative_differences(candidate, reference)
    return float(diffs.max(initial=0.0))


class RuntimeMismatch(ConfigError):
    """A runtime's features differ from the reference runtime's beyond ``TOLERANCE``."""


def compare(candidate: np.ndarray, reference: np.ndarray, what: str, where: str) -> dict:
    """Return the check of ``candidate`` rows against ``reference`` rows of the same images.

    Raises RuntimeMismatch naming ``what`` (the runtime) and ``where`` (the machine)
    when they differ beyond ``CHECK_TOLERANCE``.
    """
    candidate, reference = np.asarray(candidate), np.asarray(reference)
    if candidate.shape != reference.shape:  # flattened rows would compare equal: the shape is part of the numbers
        raise RuntimeMismatch(
            f"{what} on {where} gives features of shape {candidate.shape} where the reference gives "
            f"{reference.shape} for the same {len(reference)} images. Nothing it computed was kept."
        )
    diff = max_relative_difference(candidate, reference)
    check = {
        "runtime": what,
        "where": where,
        "max_rel_diff": diff,
        "images": int(len(reference)),
        "tolerance": CHECK_TOLERANCE,
        "key_tolerance": TOLERANCE,
        "passed": diff <= CHECK_TOLERANCE,
    }
    if not check["passed"]:
        raise RuntimeMismatch(
            f"{what} on {where} gives features that differ from the reference's by {diff:.2e} relative on "
            f"{len(reference)} of this run's images, more than the {CHECK_TOLERANCE:g} a runtime may show on "
            f"its check sample to share one cache key (rows under a key may differ by {TOLERANCE:g} on any "
            "image). Nothing it computed was kept."
        )
    return check
