"""Benchmark the reference dense head: bneck's training against the peer's plain ``model.fit``.

Same features, same head (Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(1,
sigmoid)), same settings (RMSprop 1e-3, batch 16, 50 epochs, validation each
epoch), one run, one process. The peer side is exactly what
``../shared/peers/keras_idiom.py`` does. Prints seconds, accuracies and the ratio.

  python scripts/bench_heads.py FEATURES_DIR [--epochs 50]
FEATURES_DIR holds train.h5, validation.h5 and test.h5 from `bneck extract`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bneck.core.progress import format_table  # noqa: E402
from bneck.core.tfimport import import_tensorflow  # noqa: E402
from bneck.pipeline.data import open_feature_set  # noqa: E402
from bneck.pipeline.training.heads import build_head, fit_head, proba  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features_dir")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import_tensorflow()
    import keras

    fs = open_feature_set(a.features_dir, require_test=True)
    (x, y), (xv, yv), (xt, yt) = fs.load("train"), fs.load("validation"), fs.load("test")

    # Peer: the Keras idiom, verbatim in substance.
    keras.utils.set_random_seed(a.seed)
    peer = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    peer.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    h = peer.fit(
        x, y.astype("float32"), epochs=a.epochs, batch_size=16, validation_data=(xv, yv.astype("float32")), verbose=0
    )
    peer_s = time.perf_counter() - t
    peer_val = h.history["val_accuracy"][-1]
    peer_test = peer.evaluate(xt, yt.astype("float32"), verbose=0)[1]

    # bneck: the same head through the code `bneck train --classifier dense` runs.
    keras.utils.set_random_seed(a.seed)
    ours = build_head("dense", fs.feature_shape, 2, 256, 0.5)
    cfg = dict(
        epochs=a.epochs, batch_size=16, lr=1e-3, optimizer="rmsprop", early_stopping=0, class_weight=None, seed=a.seed
    )
    t = time.perf_counter()
    hist = fit_head(ours, 2, cfg, (x, y), (xv, yv), streamed=False)
    ours_s = time.perf_counter() - t
    ours_val = hist["val_accuracy"][-1]
    ours_test = float((proba(ours, xt).argmax(1) == yt).mean())

    rows = [
        [
            "peer model.fit",
            round(peer_s, 1),
            round(peer_s / a.epochs, 3),
            f"{100 * peer_val:.1f}%",
            f"{100 * peer_test:.1f}%",
            1.0,
        ],
        [
            "bneck dense",
            round(ours_s, 1),
            round(ours_s / a.epochs, 3),
            f"{100 * ours_val:.1f}%",
            f"{100 * ours_test:.1f}%",
            round(peer_s / ours_s, 2),
        ],
    ]
    print(f"{len(x)} training rows of shape {fs.feature_shape}, {a.epochs} epochs, batch 16")
    print(format_table(["method", "seconds", "s/epoch", "val acc (last)", "test acc", "speed-up"], rows))
    print(f"test accuracy difference: {100 * (ours_test - peer_test):+.1f} points")


if __name__ == "__main__":
    main()
