"""Data health, from the cached features alone (no forward pass): what in the images deserves a look.

* **exact duplicates**: the same bytes (sha256) more than once, within a split or across
  splits (a test image that is also a training image inflates the test score);
* **near duplicates**: pairs of different files whose pooled feature vectors have cosine
  similarity >= ``NEAR``, within and across splits (crops, re-encodes, bursts);
* **likely label errors**: training images whose cross-validated prediction (bneck's
  logistic regression on the pooled features, 5 folds) confidently names another class. The
  rule is confident learning's (cleanlab): an image labelled i is flagged when its
  probability for another class j reaches class j's own average self-confidence,
  ranked by how far that probability exceeds the one for its own label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NEAR = 0.98
SHOWN = 12
_BLOCK = 1024  # rows per block of the similarity search: memory stays at BLOCK x N floats


@dataclass
class Health:
    """Findings: each list holds dicts with ``items`` ((split, path under the data folder) pairs) and a caption."""

    exact: list = field(default_factory=list)
    near: list = field(default_factory=list)
    label_errors: list = field(default_factory=list)
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
    vectors: np.ndarray, names: list[tuple[str, str]], shas: list[str], threshold: float = NEAR
) -> list[dict]:
    """Pairs of different files with cosine >= ``threshold``, most similar first (exact copies left out)."""
    pairs = []
    for start in range(0, len(vectors), _BLOCK):
        sims = vectors[start : start + _BLOCK] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows + start, cols):
            if c > r and shas[r] != shas[c]:
                pairs.append((float(sims[r - start, c]), r, c))
    pairs.sort(reverse=True)
    return [
        {"items": [names[r], names[c]], "caption": f"cosine {s:.3f}", "across": names[r][0] != names[c][0]}
        for s, r, c in pairs
    ]


def label_errors(
    vectors: np.ndarray, labels: np.ndarray, names: list[tuple[str, str]], class_names: list[str], seed: int = 0
) -> list[dict]:
    """Training images whose out-of-fold prediction confidently disagrees with their folder (see module doc)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=len(class_names))
    folds = int(min(5, counts.min()))
    if folds < 2:
        return []
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))  # bneck's logreg
    proba = cross_val_predict(
        model, vectors, labels, method="predict_proba", cv=StratifiedKFold(folds, shuffle=True, random_state=seed)
    )
    thresholds = np.array([proba[labels == j, j].mean() for j in range(len(class_names))])
    found = []
    for i, (p, y) in enumerate(zip(proba, labels)):
        others = [j for j in range(len(class_names)) if j != y and p[j] >= thresholds[j]]
        if others:
            j = max(others, key=lambda k: p[k])
            found.append((p[j] - p[y], i, j, p[j]))
    found.sort(reverse=True)
    return [
        {"items": [names[i]], "caption": f"in {class_names[labels[i]]}, looks like {class_names[j]} ({100 * pj:.0f}%)"}
        for _, i, j, pj in found
    ]


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
        health.near = near_duplicates(all_vectors, [(s, p) for s, p, _ in items], [sha for *_, sha in items])
        train_names = [("train", p) for p in fs.attrs["train"]["paths"]]
        health.label_errors = label_errors(
            vectors["train"], np.asarray(fs.labels("train")), train_names, fs.class_names
        )
        health.checked = len(items)
    except Exception as exc:  # noqa: BLE001 - the report is written after all the work: it never fails here
        health.note = f"data health not computed: {type(exc).__name__}: {str(exc)[:300]}"
    return health
