"""``knn``: k nearest neighbours (in memory; not exportable)."""

from __future__ import annotations

from sklearn.neighbors import KNeighborsClassifier

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier


def _make(seed: int, counts=None):
    n = int(sum(counts)) if counts is not None else 1000
    return KNeighborsClassifier(n_neighbors=min(11, n), n_jobs=-1)


register_classifier(
    Classifier(
        name="knn",
        kind="sklearn",
        description="k nearest neighbours",
        factory=_make,
        grid={"clf__n_neighbors": [3, 5, 11, 21], "clf__weights": ["uniform", "distance"]},
        skops_types=(
            "sklearn.metrics._dist_metrics.EuclideanDistance64",
            "sklearn.neighbors._ball_tree.BallTree",
            "sklearn.neighbors._kd_tree.KDTree",
        ),
    )
)
