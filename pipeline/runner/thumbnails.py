"""Pictures of images in the report: the most confident mistakes, and thumbnail grids at true aspect ratio.

A thumbnail is drawn only when its path resolves inside the data folder; mistakes come
only from verified predictions files scored on the run's own test images.
"""

from __future__ import annotations

import io
import os

import numpy as np

from bneck.core.files import path_inside
from bneck.pipeline.artifacts import ArtifactError, load_classifier, read_verified
from bneck.pipeline.plots import plt
from bneck.pipeline.predictions_csv import read_predictions
from bneck.pipeline.runner.gain import run_test_truth


def worst_misclassified(result, limit: int) -> tuple[str, list[dict]]:
    """Return (model label, rows) of the most confidently wrong test predictions.

    From the fine-tuned model when there is one (its ``predictions.csv``), else from the
    best classifier on the cached test features. Rows: path, true, predicted,
    probabilities; most confident mistake first.
    """
    ft = result.stages.finetune
    if ft is not None:
        text = read_verified(ft.folder).files.get("predictions.csv", b"").decode("utf-8", errors="replace")
        try:
            truth = run_test_truth(result.folder)  # only the run's own test images, with their true classes
            rows = [
                r
                for r in read_predictions(text, f"{ft.folder}/predictions.csv")
                if r["split"] == "test" and truth.get(r["path"]) == r["true"]
            ]
        except ArtifactError:
            return "", []  # the report shows no mistakes grid rather than fail after the work is done
        label = ft.name
    else:
        best = next((r for r in result.leaderboard if r.kind == "classifier"), None)
        test_file = os.path.join(result.folder, "features", "test.h5")
        if best is None or not os.path.isfile(test_file):
            return "", []
        rows, label = _classifier_predictions(best.folder, test_file), best.name
    wrong = [r for r in rows if r["true"] != r["predicted"]]
    wrong.sort(key=lambda r: -r["probabilities"][r["predicted"]])
    return label, wrong[:limit]


def _classifier_predictions(folder: str, test_file: str) -> list[dict]:
    from bneck.features import read_features
    from bneck.pipeline.predict import classifier_proba

    clf = load_classifier(folder)
    f = read_features(test_file)
    probs = classifier_proba(clf, f.features)
    names = clf.class_names
    return [
        {
            "split": "test",
            "path": p,
            "true": names[int(y)],
            "predicted": names[int(np.argmax(row))],
            "probabilities": dict(zip(names, map(float, row))),
        }
        for p, y, row in zip(f.paths, f.labels, probs)
    ]


def thumbnail_grid(
    entries: list[tuple[str, str]], data_root: str, size: int = 160, color: str = "black", cols: int = 4
):
    """Return PNG bytes of images (path under ``data_root``, caption) at their true aspect ratio; None if none.

    An image whose path leads outside ``data_root`` is not opened ("outside the data folder").
    """
    from bneck.features.images.decode import decode_image

    if not entries:
        return None
    cols = min(cols, len(entries))
    lines = (len(entries) + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(3.0 * cols, 3.3 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (relative, caption) in zip(axes.flat, entries):
        path = path_inside(data_root, relative)
        try:
            if path is None:
                raise ValueError("outside the data folder")
            ax.imshow(decode_image(path, size, keep_aspect=True))
        except Exception:  # noqa: BLE001 - a vanished or refused file still gets its caption
            ax.text(0.5, 0.5, "image unavailable", ha="center", va="center")
        ax.set_title(caption, fontsize=9, color=color)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def worst_grid(rows: list[dict], data_root: str, size: int = 160):
    """Return PNG bytes of the misclassified images with true class and probabilities; None if none."""
    from bneck.pipeline.runner.insight import short_name

    entries = [
        (
            row["path"],
            f"{short_name(row['path'])}\ntrue {row['true']}, said {row['predicted']} "
            f"({100 * row['probabilities'][row['predicted']]:.0f}%)",
        )
        for row in rows
    ]
    return thumbnail_grid(entries, data_root, size, color="firebrick")
