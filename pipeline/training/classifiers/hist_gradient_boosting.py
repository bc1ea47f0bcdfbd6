"""``hist-gradient-boosting``: histogram gradient-boosted trees (in memory; not exportable)."""

from __future__ import annotations

from sklearn.ensemble import HistGradientBoostingClassifier

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier


def _make(seed: int, counts=None):
    return HistGradientBoostingClassifier(random_state=seed)


register_classifier(
    Classifier(
        name="hist-gradient-boosting",
        kind="sklearn",
        description="histogram gradient boosting",
        factory=_make,
        grid={"clf__learning_rate": [0.05, 0.1], "clf__max_leaf_nodes": [15, 31]},
        skops_types=("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    )
)
