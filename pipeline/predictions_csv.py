"""A model folder's ``predictions.csv``: one row per scored image, written and read back here.

Every model folder holds one (each validation and test image, its true and predicted class and one
probability per class), so a run can pair two models on the same test images and an ensemble can be
selected without running a model. Reading refuses anything bneck does not write.
"""

from __future__ import annotations

import csv
import io

from bneck.core.csvcells import read_cell, text_cell
from bneck.pipeline.manifests import ArtifactError

FIXED = ("split", "path", "true", "predicted")


def write_predictions(path: str, class_names: list[str], splits: dict) -> None:
    """Write one row per image: split, path, true class, predicted class, one probability per class.

    ``splits`` maps split -> (paths, integer labels, (n, classes) probabilities).
    """
    import numpy as np

    names = [text_cell(c) for c in class_names]  # no cell a spreadsheet would run (bneck.core.csvcells)
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FIXED, *names])
        for split, (paths, labels, probs) in splits.items():
            for p, label, row in zip(paths, labels, probs):
                truth, predicted = names[int(label)], names[int(np.argmax(row))]
                writer.writerow([split, text_cell(p), truth, predicted, *(f"{v:.6f}" for v in row)])


def read_predictions(text: str, where: str = "predictions.csv") -> list[dict]:
    """Parse ``write_predictions``' file (its text) back into dicts (probabilities as floats).

    Columns are read by position (the four fixed ones, then one per class), so a class may be named
    like a fixed column (``true``, ``split``...). Raises ArtifactError, naming ``where``, for anything
    bneck does not write: another header, a row of another length, a probability that is not a
    finite number, a class that is not one of the columns.
    """
    import math

    try:
        records = csv.reader(io.StringIO(text, newline=""))  # a quoted path may hold any line break
        header = [read_cell(c) for c in next(records, [])]
        if header[:4] != list(FIXED) or len(header) < 5 or len(set(header[4:])) != len(header) - 4:
            raise ValueError("a header that is not split, path, true, predicted and distinct class names")
        classes, out = header[4:], []
        for cells in records:
            if len(cells) != len(header):
                raise ValueError("a row whose fields do not match the header")
            split, path, truth, predicted = (read_cell(c) for c in cells[:4])
            probabilities = dict(zip(classes, (float(v) for v in cells[4:])))
            if not all(math.isfinite(v) for v in probabilities.values()):
                raise ValueError("a probability that is not a finite number")
            if truth not in probabilities or predicted not in probabilities:
                raise ValueError("a true or predicted class that is not one of its columns")
            out.append(
                {"split": split, "path": path, "true": truth, "predicted": predicted, "probabilities": probabilities}
            )
        return out
    except (ValueError, csv.Error) as exc:
        raise ArtifactError(
            f"{where} is not a predictions file bneck writes ({str(exc)[:120]}); it is left unused."
        ) from None
