"""Keras heads on cached features: the reference ``dense`` head and ``gap-dense`` (registered, as every
classifier is, in ``bneck.pipeline.training.classifiers``).

In memory, heads train with ``fastfit.fast_fit``: one compiled call per epoch and
fused optimizer kernels (see there why). Features larger than the memory budget are
streamed from HDF5 with ``model.fit`` over contiguous batches in shuffled order.
"""

from __future__ import annotations

import numpy as np

from bneck.core.tfimport import import_tensorflow
from bneck.pipeline.data import FeatureSet
from bneck.pipeline.metrics import class_probabilities

OPTIMIZERS = ("rmsprop", "adam", "sgd")


def build_head(kind: str, input_shape: tuple, n_classes: int, units: int, dropout: float):
    """Return an uncompiled head: sigmoid output for 2 classes, softmax for more."""
    import_tensorflow()
    import keras

    inputs = keras.Input(shape=input_shape, name="features")
    if kind == "dense":
        x = keras.layers.Flatten(name="flatten")(inputs)
        x = keras.layers.Dense(units, activation="relu", name="dense")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="gap")(inputs) if len(input_shape) == 3 else inputs
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    if n_classes == 2:
        out = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    else:
        out = keras.layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, out, name=f"bneck_{kind.replace('-', '_')}_head")


def pools_first(kind: str, feature_shape: tuple) -> bool:
    """True when head ``kind`` starts by averaging a spatial grid (gap-dense on H x W x C features): a
    layer without weights, so the rest of the head can train on the pooled rows."""
    return kind == "gap-dense" and len(feature_shape) == 3


# From this many flattened inputs, `dense` is told to be the slow choice (MobileNet-0.25's 7x7x256 grid
# is 12,544: 30 s for 50 epochs on 2,000 images here, against seconds for gap-dense).
LARGE_DENSE_INPUTS = 10_000


def large_dense_note(shape: tuple, units: int, n_classes: int) -> str:
    """A note when ``dense`` flattens a large grid (empty otherwise): how many weights it trains, and the
    pooled head that trains in seconds."""
    inputs = int(np.prod(shape, dtype=np.int64))
    if len(shape) != 3 or inputs < LARGE_DENSE_INPUTS:
        return ""
    outputs = 1 if n_classes == 2 else n_classes  # build_head's output layer
    weights = (inputs + 1) * units + (units + 1) * outputs
    pooled = (shape[-1] + 1) * outputs
    return (
        f"note: dense flattens the {'x'.join(map(str, shape))} grid into {inputs:,} inputs, so it trains "
        f"{weights / 1e6:.1f} M weights (minutes on a CPU for a few thousand images). gap-dense averages the grid "
        f"first ({shape[-1]:,} inputs, {pooled:,} weights) and trains in "
        "seconds; it is `bneck run`'s default head."
    )


def _optimizer(name: str, lr: float, momentum: float = 0.0):
    import keras

    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr, momentum=momentum)


def _loss(n_classes: int) -> str:
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def compile_head(model, n_classes: int, optimizer: str, lr: float, momentum: float = 0.0) -> None:
    """Compile with the loss that fits the output layer and accuracy as metric."""
    model.compile(optimizer=_optimizer(optimizer, lr, momentum), loss=_loss(n_classes), metrics=["accuracy"])


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Return 'balanced' weights: n_samples / (n_classes * count(class))."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return {i: float(len(y) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


def proba(model, x, batch_size: int = 256) -> np.ndarray:
    """Return (N, C) class probabilities for in-memory features or a block iterator."""
    if isinstance(x, np.ndarray):  # batches of the array: predict() would copy it whole into a dataset first
        x = [x[start : start + batch_size] for start in range(0, len(x), batch_size)]
    # blocks of varying size: plain calls, no per-shape retracing
    out = [np.asarray(model(block, training=False)) for block in x]
    return class_probabilities(np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32))


def h5_batches(fs: FeatureSet, split: str, batch_size: int, shuffle: bool, seed: int):
    """Return a Keras ``PyDataset`` over a split's HDF5 file: contiguous batches, shuffled order.

    Every batch is checked against the file's checksum (``FeatureSet.reader``).
    """
    import keras

    binary = len(fs.class_names) == 2
    reader, labels = fs.reader(split, batch_size), fs.labels(split)

    class H5Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self._order = np.arange(len(reader))
            self._rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self):
            return len(self._order)

        def __getitem__(self, i):
            start, x = next(reader.blocks([self._order[i]]))
            y = labels[start : start + len(x)].astype(np.float32 if binary else np.int64)
            return x.astype(np.float32), y

        def on_epoch_end(self):
            if shuffle:
                self._rng.shuffle(self._order)

    return H5Batches()


def fit_head(
    model,
    n_classes: int,
    cfg: dict,
    train,
    validation,
    streamed: bool,
    fs: FeatureSet | None = None,
    block_rows: int = 256,
    on_epoch=None,
):
    """Train ``model`` per ``cfg``; returns the Keras history dict.

    ``train``/``validation`` are (x, y) arrays, or ignored when ``streamed`` (then
    batches come from ``fs``'s HDF5 files).
    """
    import keras

    callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(logs))] if on_epoch else []
    if cfg["early_stopping"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg["early_stopping"], restore_best_weights=True)
        )
    if streamed:
        y_train = fs.labels("train")
        weights = class_weights(y_train, n_classes) if cfg["class_weight"] == "balanced" else None
        compile_head(model, n_classes, cfg["optimizer"], cfg["lr"])
        history = model.fit(
            h5_batches(fs, "train", cfg["batch_size"], True, cfg["seed"]),
            validation_data=h5_batches(fs, "validation", block_rows, False, 0),
            epochs=cfg["epochs"],
            class_weight=weights,
            callbacks=callbacks,
            verbose=0,
        )
        return history.history
    from bneck.pipeline.training.fastfit import ArrayRows, fast_fit

    (x, y), (xv, yv) = train, validation
    return fast_fit(
        model,
        ArrayRows(x),  # read a block at a time: a whole copy in TensorFlow would cost 1.75 times the array
        y,
        ArrayRows(xv),
        yv,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        optimizer=cfg["optimizer"],
        lr=cfg["lr"],
        seed=cfg["seed"],
        class_weight=class_weights(y, n_classes) if cfg["class_weight"] == "balanced" else None,
        patience=cfg["early_stopping"],
        on_epoch=on_epoch,
    )
