"""A model folder's ``predictions.csv``: one row per scored image, written and read back here.

Every model folder holds one (each validation and test image, its true and predicted class and one
probability per class), so a run can pair two models on the same test images and an ensemble can be
selected without running a model. Reading refuses anything bneck does not write.
"""

from __future__ import annotations

import csv
import io

from bneck.pipeline.manifests import ArtifactError


def write_predictions(path: str, class_names: list[str], splits: dict) -> None:
    """Write one row per image: split, path, true class, predicted class, one probability per class.

    ``splits`` maps split -> (paths, integer labels, (n, classes) probabilities).
    """
    import numpy as np

    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "path", "true", "predicted", *class_names])
        for split, (paths, labels, probs) in splits.items():
            for p, label, row in zip(paths, labels, probs):
                writer.writerow(
                    [split, p, class_names[int(label)], class_names[int(np.argmax(row))], *(f"{v:.6f}" for v in row)]
                )


def read_predictions(text: str, where: str = "predictions.csv") -> list[dict]:
    """Parse ``write_predictions``' file (its text) back into dicts (probabilities as floats).

    Raises ArtifactError, naming ``where``, for anything bneck does not write: a missing
    column, a row of another length, a probability that is not a finite number.
    """
    import math

    fixed = ("split", "path", "true", "predicted")
    try:
        out = []
        for r in csv.DictReader(io.StringIO(text, newline="")):  # a quoted path may hold any line break
            if None in r or None in r.values() or not all(k in r for k in fixed):
                raise ValueError("a row whose fields do not match the header")
            probabilities = {k: float(v) for k, v in r.items() if k not in fixed}
            if not all(math.isfinite(v) for v in probabilities.values()):
                raise ValueError("a probability that is not a finite number")
            if r["true"] not in probabilities or r["predicted"] not in probabilities:
                raise ValueError("a true or predicted class that is not one of its columns")
            out.append({**{k: r[k] for k in fixed}, "probabilities": probabilities})
        return out
    except (ValueError, csv.Error) as exc:
        raise ArtifactError(
            f"{where} is not a predictions file bneck writes ({str(exc)[:120]}); it is left unused."
        ) from None
