"""The compiled training loop stages 2 and 3 share, on a synthetic problem (pure: no ../shared)."""
from __future__ import annotations
import pytest

import numpy as np

from features.tfimport import import_tensorflow
from pipeline.training.fastfit import fast_fit

pytestmark = pytest.mark.pure


def _problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)  # linearly separable
    return x, y


def _model(classes=2, seed=0):
    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))


def test_it_learns_and_the_same_seed_gives_the_same_history():
    x, y = _problem()
    xv, yv = _problem(32, 1)
    runs = [fast_fit(_model(), x, y, xv, yv, epochs=15, batch_size=8, optimizer="adam", lr=0.05, seed=3)
            for _ in range(2)]
    assert runs[0]["val_accuracy"][-1] >= 0.9 and runs[0]["loss"][-1] < runs[0]["loss"][0]
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"loss", "accuracy", "val_loss", "val_accuracy"} and len(runs[0]["loss"]) == 15


def test_keep_best_with_a_baseline_keeps_the_starting_weights_when_no_epoch_beats_it():
    x, y = _problem()
    model = _model()
    start = [w.copy() for w in model.get_weights()]
    history = fast_fit(model, x, y, x, y, epochs=2, batch_size=8, optimizer="sgd", lr=1e-9, seed=0,
                       monitor="val_accuracy", keep_best=True, baseline=1.01)  # unbeatable
    assert len(history["val_accuracy"]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(start, model.get_weights()))


def test_patience_stops_early_and_views_pick_one_version_per_example():
    x, y = _problem()
    seen = []
    history = fast_fit(_model(), np.concatenate([x, x]), y, x, y, epochs=50, batch_size=16, optimizer="sgd",
                       lr=1e-9, seed=0, patience=2, views=2, on_epoch=seen.append)
    assert len(history["loss"]) == len(seen) == 3  # no improvement after the first: stops after 2 more
