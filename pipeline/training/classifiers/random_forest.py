"""``random-forest``: a random forest of 200 trees (in memory; not exportable)."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier


def _make(seed: int, counts=None):
    return RandomForestClassifier(n_estimators=200, n_jobs=-1, random_state=seed)


register_classifier(
    Classifier(
        name="random-forest",
        kind="sklearn",
        description="random forest",
        factory=_make,
        grid={"clf__n_estimators": [200, 500], "clf__max_features": ["sqrt", 0.1]},
        skops_types=("sklearn.tree._tree.Tree",),
    )
)
