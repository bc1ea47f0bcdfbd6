"""A loaded scikit-learn model's arrays are checked before anything predicts with it.

skops rebuilds only trusted types, but it cannot know that a tree's child indices
point inside the tree: scikit-learn's compiled code (trees, gradient-boosted trees,
KD/ball trees, libsvm) trusts its fitted arrays and reads wherever they point, so a
file with one index changed crashes the process or reads other memory. Every object
of such a class anywhere in a loaded model is checked here against its own shapes:
indices inside their arrays, children after their parents (so every walk ends),
features inside the model's input width, numbers finite. ``check_fitted`` raises
ValueError naming what is wrong; ``model_io`` turns it into a refusal.
"""

from __future__ import annotations

import numpy as np


def _require(ok, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _index_array(values, n: int, what: str, low: int = 0) -> np.ndarray:
    values = np.asarray(values)
    _require(values.dtype.kind in "iu", f"{what} are not integers")
    _require(values.size == 0 or (values.min() >= low and values.max() < n), f"{what} point outside [{low}, {n})")
    return values


def _finite(values, what: str) -> None:
    _require(np.isfinite(np.asarray(values, dtype=np.float64)).all(), f"{what} hold NaN or infinity")


def check_tree(tree, n_features: int, where: str) -> None:
    """A ``sklearn.tree._tree.Tree``: children after parents, features inside the input, sizes agree."""
    n = int(tree.node_count)
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    _require(n >= 1 and left.shape == right.shape == feature.shape == (n,), f"{where}: node arrays of the wrong size")
    _require(
        int(tree.n_features) == n_features,
        f"{where}: the tree expects {tree.n_features} features, the model {n_features}",
    )
    leaf = left == -1
    _require((leaf == (right == -1)).all(), f"{where}: a node with one child")
    nodes = np.arange(n)
    _require(
        ((left > nodes) & (left < n) & (right > nodes) & (right < n))[~leaf].all(),
        f"{where}: child indices outside the tree or before their parent",
    )
    _require(((feature >= 0) & (feature < n_features))[~leaf].all(), f"{where}: split features outside the input")
    _finite(np.asarray(tree.threshold)[~leaf], f"{where}: thresholds")
    value = np.asarray(tree.value)
    _require(
        value.ndim == 3
        and value.shape[0] == n
        and value.shape[1] == int(tree.n_outputs)
        and value.shape[2] == int(np.max(tree.n_classes)),
        f"{where}: node values of the wrong shape",
    )
    _finite(value, f"{where}: node values")


def check_predictor(predictor, n_features: int, where: str) -> None:
    """A histogram-gradient-boosting ``TreePredictor``: the same rules, no categorical splits."""
    nodes = predictor.nodes
    n = len(nodes)
    _require(n >= 1, f"{where}: an empty tree")
    leaf = nodes["is_leaf"].astype(bool)
    index = np.arange(n)
    for side in ("left", "right"):
        child = nodes[side].astype(np.int64)
        _require(((child > index) & (child < n))[~leaf].all(), f"{where}: child indices outside the tree")
    feature = nodes["feature_idx"].astype(np.int64)
    _require(((feature >= 0) & (feature < n_features))[~leaf].all(), f"{where}: split features outside the input")
    _require(not nodes["is_categorical"].any(), f"{where}: categorical splits, which bneck never trains")
    _finite(nodes["value"], f"{where}: leaf values")
    _finite(nodes["num_threshold"][~leaf], f"{where}: thresholds")


def check_binary_tree(tree, n_features: int, where: str) -> None:
    """A KD or ball tree: a permutation of the data, node ranges inside it, children inside the tree."""
    data, idx_array, node_data, node_bounds = tree.get_arrays()
    n = len(data)
    _require(np.asarray(data).ndim == 2 and data.shape[1] == n_features, f"{where}: data of the wrong shape")
    _finite(data, f"{where}: data")
    _require(
        np.array_equal(np.sort(_index_array(idx_array, n, f"{where}: indices")), np.arange(n)),
        f"{where}: indices that are not a permutation of the data",
    )
    n_nodes = len(node_data)
    _require(
        n_nodes >= 1 and np.asarray(node_bounds).shape[1:] == (n_nodes, n_features),
        f"{where}: node bounds of the wrong shape",
    )
    start, end = node_data["idx_start"], node_data["idx_end"]
    _require(((start >= 0) & (start <= end) & (end <= n)).all(), f"{where}: node ranges outside the data")
    inner = np.flatnonzero(node_data["is_leaf"] == 0)
    _require((2 * inner + 2 < n_nodes).all(), f"{where}: children outside the tree")
    _finite(node_bounds, f"{where}: node bounds")


def check_libsvm(svm, where: str) -> None:
    """An SVC's libsvm arrays: support vectors, their counts, coefficients and intercepts agree."""
    vectors = np.asarray(svm.support_vectors_)
    n_sv, n_features = vectors.shape if vectors.ndim == 2 else (-1, -1)
    counts = np.asarray(svm._n_support)
    k = len(counts)
    _require(n_sv >= 1 and k >= 2 and counts.min() >= 0 and counts.sum() == n_sv, f"{where}: support counts disagree")
    _require(tuple(svm.shape_fit_)[1:] == (n_features,), f"{where}: fitted shape disagrees")
    _index_array(svm.support_, int(svm.shape_fit_[0]), f"{where}: support indices")
    _require(np.shape(svm.support_) == (n_sv,), f"{where}: support indices of the wrong size")
    _require(np.shape(svm._dual_coef_) == (k - 1, n_sv), f"{where}: dual coefficients of the wrong shape")
    pairs = k * (k - 1) // 2
    _require(np.shape(svm._intercept_) == (pairs,), f"{where}: intercepts of the wrong shape")
    _require(
        np.shape(svm._probA) in ((0,), (pairs,)) and np.shape(svm._probA) == np.shape(svm._probB),
        f"{where}: probability coefficients of the wrong shape",
    )
    _require(svm.kernel in ("linear", "rbf", "poly", "sigmoid") and not svm._sparse, f"{where}: an unknown kernel")
    for name in ("support_vectors_", "_dual_coef_", "_intercept_", "_gamma", "coef0"):
        _finite(getattr(svm, name), f"{where}: {name}")


def check_fitted(model) -> None:
    """Walk a loaded model and check every object whose compiled code trusts its arrays. Raises ValueError."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm._base import BaseLibSVM
    from sklearn.tree import BaseDecisionTree

    seen: set[int] = set()

    def walk(obj, where: str) -> None:
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, np.generic)) or obj is None:
            return
        seen.add(id(obj))
        # An unfitted estimator (a template a meta-estimator keeps) holds no arrays: predicting
        # with it raises NotFittedError, so only fitted ones are checked.
        if isinstance(obj, BaseDecisionTree) and hasattr(obj, "tree_"):
            check_tree(obj.tree_, int(obj.n_features_in_), where)
        elif isinstance(obj, HistGradientBoostingClassifier) and hasattr(obj, "_predictors"):
            for i, stage in enumerate(obj._predictors):
                for j, predictor in enumerate(stage):
                    check_predictor(predictor, int(obj.n_features_in_), f"{where} tree {i}.{j}")
        elif isinstance(obj, KNeighborsClassifier) and hasattr(obj, "_fit_method"):
            _require(obj._fit_method in ("brute", "kd_tree", "ball_tree"), f"{where}: an unknown search method")
            if obj._fit_method != "brute":
                check_binary_tree(obj._tree, int(obj.n_features_in_), where)
        elif isinstance(obj, BaseLibSVM) and hasattr(obj, "support_vectors_"):
            check_libsvm(obj, where)
        children = (
            obj.items()
            if isinstance(obj, dict)
            else enumerate(obj)
            if isinstance(obj, (list, tuple))
            else getattr(obj, "__dict__", {}).items()
        )
        for key, value in children:
            walk(value, f"{where}.{key}")

    walk(model, type(model).__name__)


# The largest model input bneck probes: 64 M numbers (a VGG16 block4 grid is 100 K).
_MAX_PROBE_VALUES = 1 << 26


def probe(predict, input_shape, n_classes: int, where: str) -> None:
    """Run ``predict`` (inputs -> (N, C) probabilities) on two inputs of ``input_shape`` (zeros and a
    seeded normal sample) and refuse anything but finite probabilities over ``n_classes`` classes.

    A model whose arrays disagree with each other (a scaler of another width, three classes
    for two names, NaN weights) fails here, once, instead of in every later prediction.
    Raises ValueError naming what is wrong.
    """
    shape = tuple(int(d) for d in input_shape)
    _require(
        all(d > 0 for d in shape) and int(np.prod(shape)) <= _MAX_PROBE_VALUES,
        f"its input shape {shape} is not one bneck writes",
    )
    x = np.stack([np.zeros(shape, np.float32), np.random.default_rng(0).normal(size=shape).astype(np.float32)])
    try:
        out = np.asarray(predict(x), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - whatever inconsistent arrays make the model raise
        raise ValueError(
            f"it cannot predict on inputs of shape {shape} ({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    _require(
        out.shape == (2, n_classes),
        f"it predicts {out.shape[-1] if out.ndim == 2 else out.shape} classes, but its manifest names {n_classes}",
    )
    _require(
        np.isfinite(out).all() and (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3),
        "it predicts values that are not probabilities (NaN, negative, or not summing to 1)",
    )
