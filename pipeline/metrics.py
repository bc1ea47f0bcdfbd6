"""Classification metrics that read the same for two classes and for a hundred."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support


def scores(y_true: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict:
    """Return accuracy, log loss, macro F1, per-class precision/recall/F1/support and the confusion matrix.

    ``proba`` is (N, C) class probabilities; the prediction is the top-1 class.
    """
    labels = list(range(len(class_names)))
    y_true = np.asarray(y_true, dtype=int)
    pred = np.asarray(proba).argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    clipped = np.clip(np.asarray(proba, dtype=np.float64), 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "loss": float(log_loss(y_true, clipped, labels=labels)),
        "macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, pred, labels=labels).tolist(),
    }


def class_probabilities(out: np.ndarray) -> np.ndarray:
    """Return (N, C) probabilities from a model's output: a sigmoid column becomes [1-p, p]."""
    out = np.asarray(out)
    return np.concatenate([1.0 - out, out], axis=1) if out.shape[1] == 1 else out


def ema(values, factor: float = 0.8) -> list[float]:
    """Exponential moving average (the reference's smoothing: previous * 0.8 + current * 0.2)."""
    out, prev = [], None
    for v in values:
        prev = v if prev is None else prev * factor + v * (1 - factor)
        out.append(float(prev))
    return out
