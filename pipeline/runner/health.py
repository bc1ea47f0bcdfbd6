"""Data health, from the cached features alone (no forward pass): what in the images deserves a look.

* **exact duplicates**: the same bytes (sha256) more than once, within a split or across
  splits (a test image that is also a training image inflates the test score);
* **near duplicates**: pairs of different files whose pooled feature vectors have cosine
  similarity >= ``NEAR``, within and across splits (crops, re-encodes, bursts);
* **likely label errors**: training images to which the cross-validated model (bneck's
  logistic regression on the pooled features, 5 folds: each image scored by a model that
  never saw it) gives their own class a probability below ``LABEL_ISSUE_BELOW`` (5 %),
  the least likely first, each with the class it looks like. The threshold is measured
  (``scripts/bench_label_issues.py``): 5 % of the training images moved into a wrong class
  folder, 5 seeds, MobileNetV2-0.5 features; it is the loosest that kept precision at or
  above 0.5 in every seed on both reference sets (cats/dogs: precision 0.76, recall 0.75;
  blood cells: precision 0.54, recall 0.90). Confident learning's rule (cleanlab's
  per-class self-confidence thresholds), used before, had precision 0.41 on blood cells.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from bneck.core.csvcells import text_cell

NEAR = 0.98
LABEL_ISSUES = "label_issues.csv"  # every listed image, in the run folder
LABEL_ISSUE_COLUMNS = ("path", "given_class", "likely_class", "likely_probability", "given_probability")
LABEL_ISSUE_BELOW = 0.05  # out-of-fold probability of an image's own class (measured: see the module doc)
LABEL_ISSUE_MEASURED = "precision 0.76 (cats/dogs) and 0.54 (blood cells), recall 0.75 and 0.90"
SHOWN = 12
NEAR_LISTED = 200  # near-duplicate pairs listed (all are counted)
_BLOCK = 1024  # rows per block of the similarity search: memory stays at BLOCK x N floats


@dataclass
class Health:
    """Findings: each list holds dicts with ``items`` ((split, path under the data folder) pairs) and a caption."""

    exact: list = field(default_factory=list)
    near: list = field(default_factory=list)  # the NEAR_LISTED most similar pairs
    near_pairs: int = 0  # every pair, counted
    near_across: int = 0
    label_errors: list = field(default_factory=list)
    label_model_accuracy: float | None = None  # how often the cross-validated model named the folder's class
    checked: int = 0
    note: str = ""


def _pooled(fs, split: str) -> np.ndarray:
    """The split's features as unit vectors: spatial maps averaged over the grid first."""
    parts = []
    for block, _ in fs.blocks(split, 512):
        v = block.reshape(len(block), -1, block.shape[-1]).mean(axis=1) if block.ndim > 2 else block
        parts.append(v.astype(np.float32))
    x = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def exact_duplicates(items: list[tuple[str, str, str]]) -> list[dict]:
    """Groups of (split, path) sharing one sha256, from ``items`` (split, path, sha256); groups that
    span splits first."""
    groups: dict = {}
    for split, path, sha in items:
        groups.setdefault(sha, []).append((split, path))
    found = [
        {
            "items": g,
            "caption": f"same bytes, {len(g)} files in {' and '.join(sorted({s for s, _ in g}))}",
            "across": len({s for s, _ in g}) > 1,
        }
        for g in groups.values()
        if len(g) > 1
    ]
    return sorted(found, key=lambda d: (not d["across"], d["items"]))


def near_duplicates(
    vectors: np.ndarray, names: list[tuple[str, str]], shas: list[str], threshold: float = NEAR, keep: int = NEAR_LISTED
) -> tuple[list[dict], int, int]:
    """Pairs of different files with cosine >= ``threshold`` (exact copies left out): the ``keep`` most
    similar, most similar first, then how many pairs there are and how many cross splits. Memory stays
    at one block of similarities plus ``keep`` pairs, however many there are (2,000 identical images
    make 1,999,000 pairs: they are counted, not listed)."""
    content = np.unique(np.asarray(shas), return_inverse=True)[1]
    split = np.unique(np.asarray([n[0] for n in names]), return_inverse=True)[1]
    best: list[tuple[float, int, int]] = []
    total = across = 0
    for start in range(0, len(vectors), _BLOCK):
        sims = vectors[start : start + _BLOCK] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        rows += start
        wanted = (cols > rows) & (content[rows] != content[cols])
        rows, cols = rows[wanted], cols[wanted]
        total += len(rows)
        across += int(np.count_nonzero(split[rows] != split[cols]))
        values = sims[rows - start, cols]
        top = np.argsort(-values, kind="stable")[:keep]
        best = heapq.nlargest(keep, best + [(float(values[t]), int(rows[t]), int(cols[t])) for t in top])
    best.sort(key=lambda p: (-p[0], p[1], p[2]))
    listed = [
        {"items": [names[r], names[c]], "caption": f"cosine {v:.3f}", "across": names[r][0] != names[c][0]}
        for v, r, c in best
    ]
    return listed, total, across


def out_of_fold_proba(vectors: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray | None:
    """Each training image's class probabilities from bneck's logistic regression fitted on the other
    folds (5, or fewer when a class has fewer images); None when a class has fewer than two."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=n_classes)
    folds = int(min(5, counts.min()))
    if folds < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))  # bneck's logreg
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, vectors, labels, method="predict_proba", cv=cv)


def listed_as_label_issues(proba: np.ndarray, labels: np.ndarray, below: float = LABEL_ISSUE_BELOW) -> list[int]:
    """Rows whose probability for their own class is below ``below``, the least likely first."""
    own = proba[np.arange(len(labels)), labels]
    return sorted(np.flatnonzero(own < below).tolist(), key=lambda i: (own[i], i))


def label_errors(
    vectors: np.ndarray,
    labels: np.ndarray,
    names: list[tuple[str, str]],
    class_names: list[str],
    seed: int = 0,
    summary: dict | None = None,
) -> list[dict]:
    """Training images the out-of-fold model finds unlikely in their folder (see the module doc): each with
    ``items``, a caption, and ``given``, ``likely``, ``likely_probability``, ``given_probability``."""
    proba = out_of_fold_proba(vectors, labels, len(class_names), seed)
    if proba is None:
        return []
    if summary is not None:
        summary["accuracy"] = float(np.mean(proba.argmax(axis=1) == labels))
    found = []
    for i in listed_as_label_issues(proba, labels):
        others = proba[i].copy()
        others[labels[i]] = -1.0
        j = int(others.argmax())
        found.append(
            {
                "items": [names[i]],
                "caption": f"in {class_names[labels[i]]} ({100 * proba[i, labels[i]]:.1f}%), "
                f"looks like {class_names[j]} ({100 * proba[i, j]:.0f}%)",
                "given": class_names[labels[i]],
                "likely": class_names[j],
                "likely_probability": float(proba[i, j]),
                "given_probability": float(proba[i, labels[i]]),
            }
        )
    return found


def write_label_issues(path: str, found: list[dict]) -> None:
    """Write every listed image as a row of ``LABEL_ISSUE_COLUMNS`` (paths under the data folder; a cell that
    a spreadsheet would run as a formula is written with a leading quote)."""
    import csv

    from bneck.core.atomic import atomic_open

    with atomic_open(path, newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_ISSUE_COLUMNS)
        for item in found:
            row = [text_cell(item["items"][0][1]), text_cell(item["given"]), text_cell(item["likely"])]
            writer.writerow(row + [f"{item['likely_probability']:.4f}", f"{item['given_probability']:.4f}"])


def data_health(features_dir: str) -> Health:
    """Look at a run's feature files; never fails the report (a problem becomes ``note``)."""
    from bneck.pipeline.data import open_feature_set

    health = Health()
    try:
        fs = open_feature_set(features_dir)
        splits = [s for s in ("train", "validation", "test") if s in fs.files]
        items = [(s, p, sha) for s in splits for p, sha in zip(fs.attrs[s]["paths"], fs.attrs[s]["sha256"])]
        health.exact = exact_duplicates(items)
        vectors = {s: _pooled(fs, s) for s in splits}
        all_vectors = np.concatenate([vectors[s] for s in splits])
        names, shas = [(s, p) for s, p, _ in items], [sha for *_, sha in items]
        health.near, health.near_pairs, health.near_across = near_duplicates(all_vectors, names, shas)
        train_names = [("train", p) for p in fs.attrs["train"]["paths"]]
        summary: dict = {}
        health.label_errors = label_errors(
            vectors["train"], np.asarray(fs.labels("train")), train_names, fs.class_names, summary=summary
        )
        health.label_model_accuracy = summary.get("accuracy")
        health.checked = len(items)
    except Exception as exc:  # noqa: BLE001 - the report is written after all the work: it never fails here
        health.note = f"data health not computed: {type(exc).__name__}: {str(exc)[:300]}"
    return health
