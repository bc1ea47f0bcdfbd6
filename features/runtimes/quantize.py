"""int8 extraction: NNCF post-training quantisation, calibrated on training images only.

The plan: a seeded permutation of the *training* split gives the calibration
images (``--calibration-images``, default 300) and, after them, a held-back check
sample. Validation and test images are never read. The quantised model is checked
against fp32 on the check sample (per-image cosine similarity of the feature
vectors); ``extract`` refuses to use it below ``--min-cosine`` unless ``--force``.

int8 features have their own cache key: the ``quantization`` key field names the
method and the calibration images by content (sha256 of their sorted hashes), so
the same images with the same seed give the same key on any machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from bneck.core.errors import ConfigError
from bneck.core.extras import import_optional
from bneck.core.hashing import sha256_files, sha256_json
from bneck.features.images.batches import decoded_batches
from bneck.features.runtimes.openvino_compile import compile_cpu

PRECISIONS = ("fp32", "int8", "bf16")
DEFAULT_CALIBRATION_IMAGES = 300
DEFAULT_MIN_COSINE = 0.98
CHECK_IMAGES = 64
# What the quantisation does, recorded in the key (changing any of it changes the numbers).
METHOD = {"precision": "int8", "method": "nncf.quantize", "preset": "performance", "fast_bias_correction": True}


# bf16: the fp32 model compiled with OpenVINO's bf16 inference precision (native on AVX512_BF16 and
# AMX CPUs). No calibration; its own key; the same cosine gate as int8.
BF16_METHOD = {"precision": "bf16", "method": "openvino INFERENCE_PRECISION_HINT=bf16 on the fp32 model"}


def reduced_precision(spec) -> str:
    """'int8', 'bf16' or 'fp32': what a spec's ``quantization`` key field asks for."""
    if spec.quantization is None:
        return "fp32"
    return json.loads(spec.quantization).get("precision", "int8")


class QuantizationRefused(ConfigError):
    """int8 or bf16 features are too far from fp32 on the check sample, and --force was not given."""


def import_nncf():
    """Return the ``nncf`` module; raises ConfigError saying how to install it."""
    return import_optional(
        "nncf", "--precision int8 (post-training quantisation)", "openvino", "nncf", "--precision fp32"
    )


@dataclass(frozen=True)
class CalibrationPlan:
    """Which training images calibrate the int8 model and which check it: (sha, path) pairs."""

    calibration: tuple
    check: tuple
    seed: int

    def key_json(self) -> str:
        """Return the ``quantization`` key field: the method and the calibration content."""
        shas = sorted(sha for sha, _ in self.calibration)
        return json.dumps(
            dict(
                METHOD, calibration_images=len(shas), calibration_seed=self.seed, calibration_sha256=sha256_json(shas)
            ),
            sort_keys=True,
        )


def plan_calibration(train_paths: Sequence[str], images: int, seed: int, workers: int = 0) -> CalibrationPlan:
    """Pick calibration and check images from the training split's files (never other splits).

    A seeded permutation of the paths (sorted first, so listing order does not
    matter); unreadable files and duplicate contents are skipped. Raises ConfigError
    if ``images`` is not a positive integer or the split is too small.
    """
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(
            f"--calibration-images must be a positive integer (default "
            f"{DEFAULT_CALIBRATION_IMAGES}). Received: calibration_images={images!r}."
        )
    paths = sorted(train_paths)
    check_count = min(CHECK_IMAGES, len(paths) // 4)
    if check_count < 1:
        raise ConfigError(
            f"--precision int8 and bf16 are checked against fp32 on held-back training images "
            f"(and int8 calibrates on the training split), so they need at least 4 training images. "
            f"Received: {len(paths)} training image(s)."
        )
    order = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]
    wanted = min(images, len(paths) - check_count) + check_count
    chosen, seen, start = [], set(), 0
    while len(chosen) < wanted and start < len(order):
        batch = order[start : start + wanted - len(chosen)]
        start += len(batch)
        for path, (sha, _) in zip(batch, sha256_files(batch, workers)):
            if sha is not None and sha not in seen:
                seen.add(sha)
                chosen.append((sha, path))
    calibration = tuple(chosen[: max(1, len(chosen) - check_count)])
    return CalibrationPlan(calibration, tuple(chosen[len(calibration) :]), seed)


def _decode(items, size: int, workers: int) -> np.ndarray:
    arrays = [batch for _, batch, _ in decoded_batches(list(items), size, 32, workers) if len(batch)]
    if not arrays:
        raise ConfigError(
            "no calibration image could be decoded; every sampled training image "
            "was unusable. Check the training folder, or use --precision fp32."
        )
    return np.concatenate(arrays)


def cosine_per_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the cosine similarity of each row of ``a`` with the same row of ``b`` (flattened)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    norms = na * nb
    # two all-zero rows are the same row (1); an all-zero row against any other is nothing like it (0)
    both_zero = np.where((na == 0) & (nb == 0), 1.0, 0.0)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-300), both_zero)


def quantize(ov, fp32_graph, plan: CalibrationPlan, size: int, workers: int = 0, verbose: bool = True):
    """Return the int8 graph: NNCF post-training quantisation on the plan's calibration images
    (NNCF's own progress bars and log lines only when ``verbose``)."""
    nncf = import_nncf()
    calibration = _decode(plan.calibration, size, workers)
    with _quiet_nncf(not verbose):
        return nncf.quantize(
            fp32_graph,
            nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))]),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(calibration),
            fast_bias_correction=METHOD["fast_bias_correction"],
        )


@contextmanager
def _quiet_nncf(quiet: bool):
    """Silence NNCF while ``quiet``: its progress bars draw on rich's shared console, its notes go to the
    'nncf' logger. Both are restored afterwards (nothing is redirected: other threads keep printing)."""
    import logging

    import rich

    console, logger = rich.get_console(), logging.getLogger("nncf")
    before = console.quiet, logger.level
    if quiet:
        console.quiet = True
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        console.quiet, _ = before
        logger.setLevel(before[1])


def cosine_check(ov, fp32_graph, int8_graph, plan: CalibrationPlan, size: int, workers: int = 0) -> dict:
    """Return how far int8 features are from fp32 on the plan's held-back images.

    The stats hold cosine_min/cosine_mean over the check images and the counts and
    versions, for the feature files' attributes.
    """
    nncf = import_nncf()
    check = _decode(plan.check, size, workers)
    fp32 = compile_cpu(ov, fp32_graph)(check)
    int8 = compile_cpu(ov, int8_graph)(check)
    cosine = cosine_per_row(np.asarray(fp32), np.asarray(int8))
    return dict(
        cosine_min=float(cosine.min()),
        cosine_mean=float(cosine.mean()),
        check_images=int(len(check)),
        calibration_images=len(plan.calibration),
        calibration_seed=plan.seed,
        nncf_version=nncf.__version__,
        openvino_version=ov.get_version(),
    )


def bf16_cosine_check(ov, fp32_graph, plan: CalibrationPlan, size: int, workers: int = 0) -> dict:
    """Return how far the fp32 model computed in bf16 is from it computed in f32, on the plan's held-back
    training images (the same statistics as ``cosine_check``)."""
    check = _decode(plan.check, size, workers)
    fp32 = compile_cpu(ov, fp32_graph)(check)
    bf16 = compile_cpu(ov, fp32_graph, "bf16")(check)
    cosine = cosine_per_row(np.asarray(fp32), np.asarray(bf16))
    return dict(
        cosine_min=float(cosine.min()),
        cosine_mean=float(cosine.mean()),
        check_images=int(len(check)),
        calibration_images=0,
        calibration_seed=plan.seed,
        openvino_version=ov.get_version(),
    )


def gate(stats: dict, min_cosine: float, force: bool, backbone: str, precision: str = "int8") -> dict:
    """Return ``stats`` with the gate's outcome; raises QuantizationRefused below ``min_cosine``."""
    passed = stats["cosine_min"] >= min_cosine
    if not passed and not force:
        raise QuantizationRefused(
            f"{precision} features of {backbone} are too far from fp32: per-image cosine similarity "
            f"min {stats['cosine_min']:.4f} (mean {stats['cosine_mean']:.4f}) over "
            f"{stats['check_images']} held-back training images, below --min-cosine {min_cosine}. "
            f"Use --precision fp32 (or another backbone), or pass --force to accept the loss; "
            + (
                "the quantised model is kept in the cache, so a rerun does not quantise again."
                if precision == "int8"
                else "this check is kept, so a rerun does not check again."
            )
        )
    return dict(stats, min_cosine=min_cosine, passed=passed, forced=bool(force and not passed))
