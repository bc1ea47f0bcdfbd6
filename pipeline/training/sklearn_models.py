"""The parts every bneck scikit-learn model shares: a Pipeline reshape -> scale -> [PCA] -> model.

``SpatialReshape`` turns (N, H, W, C) features into vectors by flattening or by
average/max pooling over the grid (the default is ``avg``: 256 numbers per image
for MobileNet-0.25 instead of 12,544, at no loss of accuracy for linear models).
Out of core, ``logreg``, ``linear-svm`` and ``mlp`` train with ``partial_fit`` over
HDF5 blocks (``StreamedLinear``); the others need their data in memory and say so.
Which classifiers exist, and how each is made, is the registry's
(``bneck.pipeline.training.classifiers``). ``SpatialReshape`` and ``StreamedLinear``
stay here: their path, ``bneck.pipeline.training.sklearn_models.X``, is written in
every saved model file.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bneck.core.errors import ConfigError

RESHAPES = ("flatten", "avg", "max")
LOGREG_C = 0.1


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


def sklearn_pipeline(estimator, reshape: str, pca, seed: int) -> Pipeline:
    """Return the unfitted Pipeline ``reshape -> scale -> [PCA] -> estimator`` (``clf`` is the last step's
    name, which the registry's --search grids address as ``clf__...``)."""
    steps = [("reshape", SpatialReshape(reshape)), ("scale", StandardScaler())]
    if pca:
        steps.append(("pca", PCA(n_components=pca, random_state=seed)))
    steps.append(("clf", estimator))
    return Pipeline(steps)


def build_sklearn(name: str, reshape: str, pca, seed: int, counts=None) -> Pipeline:
    """Return the unfitted Pipeline for registered scikit-learn classifier ``name`` (``counts``: training
    images per class, which scale its internal cross-validation, neighbours and early stopping down for
    very small sets). Raises ConfigError for a name that is not a registered scikit-learn classifier."""
    # imported here: the classifier modules the registry loads import this module
    from bneck.pipeline.training.classifiers.registry import get_classifier

    return sklearn_pipeline(get_classifier(name, kind="sklearn").factory(seed, counts), reshape, pca, seed)


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
        return SGDClassifier(
            loss=loss,
            alpha=1.0 / (LOGREG_C * max(1, n_samples)),
            learning_rate="adaptive",
            eta0=0.01,
            random_state=self.seed,
        )

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
                self.model_.partial_fit(
                    self.scaler_.transform(self.reshape_.transform(X))[order], y[order], classes=self.classes_
                )
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(self.scaler_.transform(self.reshape_.transform(X)))

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
