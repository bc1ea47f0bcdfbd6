"""Out-of-domain images: how unlike a model's own images an image is, calibrated on its validation images.

The score is the cosine distance from an image's pooled features (the feature map averaged
over its grid: the frozen extractor's for a classifier, the fine-tuned base's for a
fine-tuned model) to the nearest class centroid (the normalised mean of that class's
normalised validation vectors). The threshold is the ``QUANTILE`` (0.99) of the validation
images' own scores, each computed leave-one-out (against centroids made without it), so
about 1 % of images like the validation ones are flagged. Measured
(``scripts/bench_ood.py``, MobileNetV2-0.5): AUROC 1.000 for cats/dogs photos through a
blood-cell model and 0.9997 the other way; a classifier's own confidence (maximum
probability, energy) scored out-of-domain images as more in-domain than real ones
(AUROC 0.01 and 0.74), so it is not used. A folder stores the centroids and threshold in
``domain.json`` (numbers only, hashed in its manifest like every file).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

DOMAIN_FILE = "domain.json"
MAX_BYTES = 16 << 20  # 1,000 classes x 2,048 features written as text is about 20 MB: far above any real one
QUANTILE = 0.99
SCORE = "cosine distance of the pooled features to the nearest class centroid of the validation images"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pooled(features: np.ndarray) -> np.ndarray:
    """(N, ...) features as (N, D) unit vectors: a feature map averaged over its grid first."""
    x = np.asarray(features, dtype=np.float64)
    return _unit(x.reshape(len(x), -1, x.shape[-1]).mean(axis=1) if x.ndim > 2 else x.reshape(len(x), -1))


def _leave_one_out_scores(vectors: np.ndarray, labels: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each vector's score against the centroids, its own class's made without it."""
    centroids = _unit(sums)
    similarity = vectors @ centroids.T  # (N, C)
    own = sums[labels] - vectors  # its class's sum without it
    alone = counts[labels] <= 1  # no centroid of its class without it
    similarity[np.arange(len(vectors)), labels] = np.where(alone, -np.inf, np.sum(vectors * _unit(own), axis=1))
    return 1.0 - similarity.max(axis=1)


@dataclass(frozen=True)
class Domain:
    """Class centroids (unit vectors) and the score above which an image is out of domain."""

    centroids: np.ndarray
    threshold: float
    quantile: float = QUANTILE
    validation_images: int = 0

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """The score of each unit vector (0: on a centroid, up to 2: opposite every one)."""
        return 1.0 - (np.asarray(vectors, dtype=np.float64) @ self.centroids.T).max(axis=1)

    def to_json(self) -> dict:
        return {
            "score": SCORE,
            "quantile": self.quantile,
            "threshold": self.threshold,
            "validation_images": self.validation_images,
            "centroids": [[float(f"{v:.7g}") for v in row] for row in self.centroids],
        }


def calibrate(features: np.ndarray, labels: np.ndarray, n_classes: int, quantile: float = QUANTILE) -> Domain | None:
    """The domain of a model from its validation images' features; None when no class has two images."""
    vectors, labels = pooled(features), np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if len(vectors) == 0 or counts.max() < 2:
        return None
    sums = np.zeros((n_classes, vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    present = counts > 0  # a class without validation images has no centroid
    scores = _leave_one_out_scores(vectors, labels, sums, counts)
    scores = scores[np.isfinite(scores)]
    threshold = float(np.quantile(scores, quantile, method="higher"))
    return Domain(_unit(sums[present]), threshold, quantile, int(len(vectors)))


UNCALIBRATED = "its validation split has no class with two images to calibrate on"


def write_domain(folder: str, domain: Domain | None) -> None:
    """Write ``domain.json`` into a model folder: the calibration, or, when there is none, why (so that a
    rerun does not train again for a domain it could never record)."""
    from bneck.core.atomic import atomic_open

    with atomic_open(f"{folder}/{DOMAIN_FILE}") as handle:
        json.dump(domain.to_json() if domain is not None else {"uncalibrated": UNCALIBRATED}, handle)


def uncalibrated(files: dict[str, bytes]) -> bool:
    """Whether the folder's ``domain.json`` records that it could not be calibrated."""
    try:
        return json.loads(files.get(DOMAIN_FILE, b"{}").decode("utf-8")) == {"uncalibrated": UNCALIBRATED}
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False


def read_domain(files: dict[str, bytes]) -> Domain | None:
    """The domain recorded in a verified folder's files, None when it has none (made before bneck had it, or
    recorded as uncalibrated: ``uncalibrated``).

    Raises ValueError for a file that is not one ``write_domain`` could have written.
    """
    data = files.get(DOMAIN_FILE)
    if data is None:
        return None
    if len(data) > MAX_BYTES:
        raise ValueError(f"it is {len(data)} bytes, more than the {MAX_BYTES} bytes bneck ever writes")
    raw = json.loads(data.decode("utf-8"))
    if raw == {"uncalibrated": UNCALIBRATED}:
        return None
    centroids = np.asarray(raw["centroids"], dtype=np.float64)
    threshold, quantile, images = float(raw["threshold"]), float(raw["quantile"]), raw.get("validation_images", 0)
    if centroids.ndim != 2 or not centroids.size or not np.isfinite(centroids).all():
        raise ValueError("its centroids are not a finite (classes, features) table")
    if not np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-4):
        raise ValueError("its centroids are not unit vectors, as bneck writes them")
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 2.0 and 0.5 <= quantile <= 1.0):
        raise ValueError(f"its threshold {threshold!r} or quantile {quantile!r} is out of range")
    if isinstance(images, bool) or not isinstance(images, int) or images < 2:
        raise ValueError(f"its validation image count {images!r} is not a whole number of at least 2")
    return Domain(_unit(centroids), threshold, quantile, images)


def feature_set_domain(fs, rows: int = 512) -> Domain | None:
    """The domain of classifiers trained on feature set ``fs``: its validation split's features, read in
    blocks of ``rows`` rows (a streamed classifier's memory bound; computed once per set); None without a
    validation split."""
    if "validation" not in fs.files:
        return None
    if "domain" not in fs._loaded:
        parts = [(pooled(x), y) for x, y in fs.blocks("validation", fs.reduce_rows(rows))]
        vectors = np.concatenate([v for v, _ in parts]) if parts else np.zeros((0, 1))
        labels = np.concatenate([y for _, y in parts]) if parts else np.zeros(0, np.int64)
        fs._loaded["domain"] = calibrate(vectors, labels, len(fs.class_names))
    return fs._loaded["domain"]
