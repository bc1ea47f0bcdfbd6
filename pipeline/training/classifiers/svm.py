"""``svm``: an RBF-kernel SVM with Platt-calibrated probabilities (in memory; not exportable)."""

from __future__ import annotations

from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import SVC

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier


def _make(seed: int, counts=None):
    smallest = int(min(counts)) if counts is not None else 5
    return CalibratedClassifierCV(SVC(kernel="rbf", C=10.0, random_state=seed), cv=min(5, smallest), ensemble=False)


register_classifier(
    Classifier(
        name="svm",
        kind="sklearn",
        description="RBF-kernel SVM, sigmoid-calibrated",
        factory=_make,
        grid={"clf__estimator__C": [1.0, 10.0, 100.0], "clf__estimator__gamma": ["scale", "auto"]},
        min_per_class=2,
        skops_types=("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"),
    )
)
