"""``mlp``: a one-hidden-layer ReLU perceptron; streams with ``partial_fit``; folds into layers exactly."""

from __future__ import annotations

from sklearn.neural_network import MLPClassifier

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier
from bneck.pipeline.training.sklearn_models import StreamedLinear


def _make(seed: int, counts=None):
    n, classes = (int(sum(counts)), len(counts)) if counts is not None else (1000, 2)
    # early stopping holds out 10%; it needs at least one image per class there
    return MLPClassifier(
        hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=n // 10 >= classes, max_iter=300, random_state=seed
    )


def _fold(keras, x, est, maps, n_classes: int):
    """Exported as layers, exactly (imported here: training never loads the export package)."""
    from bneck.pipeline.export.fold import fold_mlp

    return fold_mlp(keras, x, est, maps, n_classes)


register_classifier(
    Classifier(
        name="mlp",
        kind="sklearn",
        description="multi-layer perceptron, 256 ReLU units (exports exactly, streams)",
        factory=_make,
        grid={"clf__alpha": [1e-4, 1e-3, 1e-2], "clf__hidden_layer_sizes": [(256,), (512,)]},
        streamed=lambda reshape, seed: StreamedLinear("mlp", reshape, seed=seed),
        fold=_fold,
        skops_types=(
            "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
            "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        ),
    )
)
