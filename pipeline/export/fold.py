"""scikit-learn models as Keras layers, exactly: the affine parts folded into one Dense.

A bneck scikit-learn model is ``reshape -> StandardScaler -> [PCA] -> classifier``.
Reshaping is pooling or flattening; scaling and PCA are affine maps, and so is the
decision function of a linear classifier, so their composition is one matrix and one
bias (computed in float64, stored in float32). What turns decisions into
probabilities is then written with built-in layers only, so the exported model
loads anywhere Keras does:

* multinomial logistic regression: ``softmax(z)``;
* binary logistic models: ``[1 - sigmoid(z), sigmoid(z)] = softmax([0, z])``;
* one-vs-rest models normalised by their sum (SGD log-loss, sigmoid calibration of
  several classes): ``sigmoid(z_k) / sum_j sigmoid(z_j) = softmax(log_sigmoid(z))``;
* ``CalibratedClassifierCV`` (``linear-svm``): each fold's Platt sigmoid
  ``1 / (1 + exp(a d + b))`` is affine inside, the folds are averaged;
* ``MLPClassifier`` with ReLU: its layers are Dense layers.

Which classifier folds, and how, is its registry entry's ``fold`` (one of ``fold_linear`` and
``fold_mlp`` for the built-in ones; ``bneck.pipeline.training.classifiers``). Kernel SVMs,
neighbours and tree ensembles are not layers: ``FoldError`` names what is.
"""

from __future__ import annotations

import numpy as np

from bneck.core.errors import BneckError


class FoldError(BneckError):
    """A scikit-learn model that is not a composition of affine maps and standard activations
    (``what`` names the part that is not)."""

    def __init__(self, message: str, what: str = ""):
        super().__init__(message)
        self.what = what


def refusal(what: str, exact: str = "") -> FoldError:
    """Return the FoldError for ``what`` (e.g. 'a calibrated SVC'); ``exact`` names the models that export
    (``sklearn_layers`` fills it in from the classifier registry)."""
    return FoldError(
        f"this model cannot be exported: {what} is not expressible as neural-network layers "
        f"without approximating it. Models that export exactly: {exact or 'see docs/export.md'}. "
        "Train one of those (e.g. `bneck train FEATURES --classifier logreg`) and export it, or "
        "keep this one inside bneck (`bneck predict`).",
        what,
    )


_refuse = refusal


def describe(est) -> str:
    """Return what a final estimator is, in words ('a calibrated SVC', 'a KNeighborsClassifier')."""
    name = type(est).__name__
    if name == "CalibratedClassifierCV":
        inner = getattr(est, "estimator", None)
        return f"a calibrated {type(inner).__name__}" if inner is not None else "a calibrated classifier"
    return f"a {name}" + (f" with {est.loss!r} loss" if isinstance(getattr(est, "loss", None), str) else "")


def _parts(model):
    """Return (reshape mode, [affine (A, c) pairs], final estimator) of a bneck scikit-learn model."""
    if hasattr(model, "steps"):  # Pipeline: reshape -> scale -> [pca] -> clf
        named = dict(model.steps)
        maps = [_scaler(named["scale"])] + ([_pca(named["pca"])] if "pca" in named else [])
        return named["reshape"].mode, maps, named["clf"]
    if all(hasattr(model, a) for a in ("reshape_", "scaler_", "model_")):  # StreamedLinear or alike
        return model.reshape_.mode, [_scaler(model.scaler_)], model.model_
    raise _refuse(type(model).__name__)


def _scaler(scaler):
    """Return the scaler as (per-feature factor, offset): x * f + c."""
    n = int(scaler.n_features_in_)
    scale = np.asarray(scaler.scale_, np.float64) if scaler.with_std and scaler.scale_ is not None else np.ones(n)
    mean = np.asarray(scaler.mean_, np.float64) if scaler.with_mean and scaler.mean_ is not None else np.zeros(n)
    return 1.0 / scale, -mean / scale


def _pca(pca):
    """Return PCA as (matrix, offset): x @ A + c."""
    comp = np.asarray(pca.components_, dtype=np.float64).T  # (D, k)
    if pca.whiten:
        comp = comp / np.sqrt(np.asarray(pca.explained_variance_, dtype=np.float64))
    return comp, -np.asarray(pca.mean_, dtype=np.float64) @ comp


def _pull(maps, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (W', b') with ``x @ W' + b'`` equal to ``maps`` applied to x in order, then ``@ W + b``.

    A 1-D factor is a diagonal map (the scaler), kept as a vector: a flattened 7x7x1280
    map would otherwise need a 62,720-square matrix.
    """
    for a, c in reversed(maps):
        b = c @ w + b
        w = a[:, None] * w if a.ndim == 1 else a @ w
    return w, b


def _linear(est) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(est.coef_, dtype=np.float64).T, np.asarray(est.intercept_, dtype=np.float64)


def _check_classes(est, n_classes: int, what: str) -> None:
    classes = list(map(int, getattr(est, "classes_", [])))
    if classes != list(range(n_classes)):
        raise FoldError(
            f"{what} was fitted on classes {classes[:8]}, not the labels 0..{n_classes - 1} "
            "of its manifest; it cannot be exported."
        )


def _logits(est, n_classes: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Return one (W, b, rule) per averaged member: decisions ``x @ W + b`` and how they become
    probabilities ('softmax', 'binary', 'ovr')."""
    name = type(est).__name__
    if name == "LogisticRegression":
        _check_classes(est, n_classes, name)
        return [(*_linear(est), "binary" if n_classes == 2 else "softmax")]
    if name == "SGDClassifier" and est.loss == "log_loss":
        _check_classes(est, n_classes, name)
        return [(*_linear(est), "binary" if n_classes == 2 else "ovr")]
    if name == "CalibratedClassifierCV":
        return [_calibrated(member, n_classes) for member in est.calibrated_classifiers_]
    raise _refuse(describe(est))


def _calibrated(member, n_classes: int):
    inner = member.estimator
    if type(inner).__name__ not in ("LinearSVC", "LogisticRegression", "SGDClassifier") or not hasattr(inner, "coef_"):
        raise _refuse(f"a calibrated {type(inner).__name__}")
    _check_classes(inner, n_classes, type(inner).__name__)
    if any(type(c).__name__ != "_SigmoidCalibration" for c in member.calibrators):
        raise _refuse("isotonic calibration")
    w, b = _linear(inner)  # (D, K') decisions; K' = 1 for two classes
    a = np.array([c.a_ for c in member.calibrators], dtype=np.float64)
    off = np.array([c.b_ for c in member.calibrators], dtype=np.float64)
    # Platt: p = 1 / (1 + exp(a d + b)) = sigmoid(-(a d + b)), affine in x
    return w * -a, -(b * a + off), "binary" if n_classes == 2 else "ovr"


def _dense(keras, w: np.ndarray, b: np.ndarray, name: str, activation=None):
    layer = keras.layers.Dense(w.shape[1], activation=activation, name=name)
    layer.build((None, w.shape[0]))
    layer.set_weights([w.astype(np.float32), b.astype(np.float32)])
    return layer


def _probabilities(keras, x, members, maps, n_classes: int):
    """Apply averaged members ``(W, b, rule)`` after ``maps`` to ``x``; returns probabilities."""
    cols, bias = [], []
    for w, b, rule in members:
        if rule == "binary":  # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
            w = np.concatenate([np.zeros_like(w), w], axis=1)
            b = np.concatenate([np.zeros_like(b), b])
        w, b = _pull(maps, w, b)
        cols.append(w)
        bias.append(b)
    ovr = members[0][2] == "ovr"
    z = _dense(
        keras,
        np.concatenate(cols, axis=1),
        np.concatenate(bias),
        "folded_linear",
        activation="log_sigmoid" if ovr else None,
    )(x)
    z = keras.layers.Reshape((len(members), n_classes), name="members")(z)
    p = keras.layers.Softmax(axis=-1, name="probabilities_per_member")(z)
    return keras.layers.GlobalAveragePooling1D(name="probabilities")(p)


def fold_linear(keras, x, est, maps, n_classes: int):
    """Fold a linear classifier (logistic regression, SGD log loss, sigmoid-calibrated linear models)
    after the affine ``maps``; returns the probabilities tensor. Raises FoldError."""
    return _probabilities(keras, x, _logits(est, n_classes), maps, n_classes)


def fold_mlp(keras, x, est, maps, n_classes: int):
    """Fold a ReLU ``MLPClassifier`` after the affine ``maps``; returns the probabilities tensor.
    Raises FoldError for other activations or labels."""
    if type(est).__name__ != "MLPClassifier":
        raise _refuse(describe(est))
    return _mlp(keras, x, est, maps, n_classes)


def fold_any(keras, x, est, maps, n_classes: int):
    """Fold by the estimator's type (an MLP, else a linear model); returns the probabilities tensor."""
    if type(est).__name__ == "MLPClassifier":
        return _mlp(keras, x, est, maps, n_classes)
    return fold_linear(keras, x, est, maps, n_classes)


def _mlp(keras, x, est, maps, n_classes: int):
    _check_classes(est, n_classes, "MLPClassifier")
    if est.activation != "relu" or est.out_activation_ not in ("logistic", "softmax"):
        raise _refuse(f"an MLPClassifier with {est.activation!r} hidden units")
    weights = [np.asarray(w, dtype=np.float64) for w in est.coefs_]
    biases = [np.asarray(b, dtype=np.float64) for b in est.intercepts_]
    weights[0], biases[0] = _pull(maps, weights[0], biases[0])
    for i, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):
        x = _dense(keras, w, b, f"mlp_hidden_{i}", activation="relu")(x)
    rule = "binary" if est.out_activation_ == "logistic" else "softmax"
    return _probabilities(keras, x, [(weights[-1], biases[-1], rule)], [], n_classes)


def sklearn_layers(model, features, n_classes: int, fold=None, exact: str = ""):
    """Return the probabilities tensor of ``model`` (a bneck scikit-learn model) applied to the
    Keras tensor ``features``, its final estimator folded by ``fold`` (a registry entry's; by
    default ``fold_any``, by type). Raises FoldError for models that are not layers, naming
    ``exact`` (the models that export) as the way out."""
    import keras

    mode, maps, est = _parts(model)
    x = features
    if len(x.shape) > 2:
        if mode == "flatten":
            x = keras.layers.Flatten(name="flatten")(x)
        else:
            pool = {
                (4, "avg"): keras.layers.GlobalAveragePooling2D,
                (4, "max"): keras.layers.GlobalMaxPooling2D,
                (3, "avg"): keras.layers.GlobalAveragePooling1D,
                (3, "max"): keras.layers.GlobalMaxPooling1D,
            }
            x = pool[(len(x.shape), mode)](name=f"{mode}_pool")(x)
    try:
        return (fold or fold_any)(keras, x, est, maps, n_classes)
    except FoldError as exc:
        raise refusal(exc.what, exact) if exc.what and exact else exc from None
