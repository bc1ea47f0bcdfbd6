"""``linear-svm``: a linear SVM with Platt-calibrated probabilities; streamed, SGD with modified Huber loss."""

from __future__ import annotations

from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import LinearSVC

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier
from bneck.pipeline.training.sklearn_models import StreamedLinear


def _make(seed: int, counts=None):
    smallest = int(min(counts)) if counts is not None else 5
    return CalibratedClassifierCV(LinearSVC(C=0.01, max_iter=5000, random_state=seed), cv=min(3, smallest))


def _fold(keras, x, est, maps, n_classes: int):
    """Exported as layers, exactly (imported here: training never loads the export package)."""
    from bneck.pipeline.export.fold import fold_linear

    return fold_linear(keras, x, est, maps, n_classes)


register_classifier(
    Classifier(
        name="linear-svm",
        kind="sklearn",
        description="linear SVM, sigmoid-calibrated (exports exactly, streams)",
        factory=_make,
        grid={"clf__estimator__C": [0.001, 0.01, 0.1, 1.0]},
        min_per_class=2,
        streamed=lambda reshape, seed: StreamedLinear("linear-svm", reshape, seed=seed),
        fold=_fold,
        skops_types=("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"),
    )
)
