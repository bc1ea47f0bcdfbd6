"""PNG plots a person would rather look at than read: curves raw and smoothed, confusion matrices."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
# Class names and file names come from folders anyone may name: a name like $\foo{$ is text, not a formula.
matplotlib.rcParams["text.parse_math"] = False
matplotlib.rcParams["text.usetex"] = False
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bneck.pipeline.metrics import ema  # noqa: E402


def training_curves(history: dict, path: str, title: str) -> None:
    """Plot loss and accuracy per epoch, raw (faint) and EMA-smoothed (factor 0.8)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, color in (("", "tab:blue"), ("val_", "tab:orange")):
            values = history.get(prefix + metric)
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            name = "validation" if prefix else "train"
            ax.plot(epochs, values, color=color, alpha=0.3, linewidth=1)
            ax.plot(epochs, ema(values), color=color, linewidth=2, label=f"{name} (smoothed)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{title}  (faint: per epoch; bold: smoothed, EMA 0.8)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion(matrix, class_names: list[str], path: str, title: str) -> None:
    """Plot a confusion matrix with counts in the cells (rows: true class)."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    size = min(12, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        top = matrix.max() if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    color="white" if matrix[i, j] > top / 2 else "black",
                    fontsize=9,
                )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion_plots(metrics: dict, class_names: list[str], folder: str, label: str) -> None:
    """Write ``confusion_validation.png`` and ``confusion_test.png`` for the splits scored."""
    import os

    for split in ("validation", "test"):
        if split in metrics:
            confusion(
                metrics[split]["confusion_matrix"],
                class_names,
                os.path.join(folder, f"confusion_{split}.png"),
                f"{label}: {split} ({100 * metrics[split]['accuracy']:.1f}%)",
            )


def confusion_grid(models: list[tuple[str, list]], class_names: list[str]) -> bytes:
    """Return PNG bytes of one small confusion matrix per (model name, matrix), side by side, one colour scale
    per panel (rows: true class, columns: predicted)."""
    import io

    n, k = len(models), len(class_names)
    cols = min(4, n)
    lines = (n + cols - 1) // cols
    side = min(4.2, 1.6 + 0.3 * k)
    fig, axes = plt.subplots(lines, cols, figsize=(side * cols, (side + 0.5) * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, matrix) in zip(axes.flat, models):
        matrix = np.asarray(matrix)
        ax.axis("on")
        ax.imshow(matrix, cmap="Blues")
        right = int(np.trace(matrix)) if matrix.size else 0
        ax.set_title(f"{name}\n{right}/{int(matrix.sum())} right", fontsize=9)
        labels = class_names if k <= 12 else [""] * k
        ax.set_xticks(range(k), labels, rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center", fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
        if k <= 12:
            top = matrix.max() if matrix.size else 0
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if matrix[i, j] > top / 2 else "black",
                    )
    fig.supxlabel("predicted", fontsize=9)
    fig.supylabel("true", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
