"""Measure out-of-domain flagging (the figures in docs/results.md): one reference set's model, the other's images.

For each ordered pair of runs (A, B), where A's model should flag B's images:

1. **classifiers** (from the feature files, seconds): the domain bneck records for A's
   classifiers (``pipeline.domain.calibrate`` on A's validation features) scores A's test
   images and B's test images (B's rows come from the same extractor). Compared with what a
   classifier's own confidence would give: 1 - the maximum probability and the energy
   (-logsumexp of the logits) of bneck's logistic regression trained on A.
2. **fine-tuned models** (``--images N`` of each test set through ``bneck predict``'s own
   path, ``pipeline.predict.classify``, with A's ``finetuned`` folder): its recorded domain.

Printed per pair: AUROC (B's images ranked above A's), the share of A's test images flagged
(false flags) and of B's flagged (detection) at the recorded threshold.

Usage (the runs of ``scripts/bench_finetune_accuracy.py --only cats-mobilenetv2,blood-mobilenetv2
--out /work/runs/acc``; about 2 minutes on 2 cores):
    .venv/bin/python scripts/bench_ood.py /work/runs/acc/cats-mobilenetv2 /work/runs/acc/blood-mobilenetv2
"""

from __future__ import annotations

import argparse
import json
import os
import time

import h5py
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bneck.pipeline.domain import calibrate, pooled


def split_of(run: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pooled unit vectors, labels and absolute image paths of a run's split."""
    with h5py.File(os.path.join(run, "features", f"{split}.h5"), "r") as f:
        features = f["features"]
        vectors = np.concatenate([pooled(features[i : i + 256]) for i in range(0, len(features), 256)])
        root = f.attrs["data_root"]
        paths = [os.path.join(root, p.decode() if isinstance(p, bytes) else p) for p in f["paths"][:]]
        return vectors, np.asarray(f["labels"][:]), paths


def rates(inside: np.ndarray, outside: np.ndarray, threshold: float | None) -> tuple[float, float, float]:
    """(AUROC with outside as positive, share of inside above threshold, share of outside above it)."""
    auroc = roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside])
    if threshold is None:
        return auroc, float("nan"), float("nan")
    return auroc, float(np.mean(inside > threshold)), float(np.mean(outside > threshold))


def classifier_rows(a: str, b: str) -> list[tuple]:
    """The recorded domain and the logistic regression's confidence, on the feature files."""
    xv, yv, _ = split_of(a, "validation")
    xt, _, _ = split_of(a, "test")
    xo, _, _ = split_of(b, "test")
    domain = calibrate(xv, yv, int(yv.max()) + 1)
    rows = [
        ("bneck: distance to nearest class centroid", *rates(domain.scores(xt), domain.scores(xo), domain.threshold))
    ]
    xr, yr, _ = split_of(a, "train")
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(xr, yr)
    for name, score in (
        ("logreg 1 - maximum probability", lambda x: 1 - logreg.predict_proba(x).max(axis=1)),
        ("logreg energy", lambda x: -np.logaddexp.reduce(_logits(logreg, x), axis=1)),
    ):
        rows.append((name, *rates(score(xt), score(xo), None)))
    return rows


def _logits(model, x: np.ndarray) -> np.ndarray:
    z = model.decision_function(x)
    return np.c_[np.zeros(len(z)), z] if z.ndim == 1 else z


def finetuned_row(a: str, b: str, images: int) -> tuple:
    """A's fine-tuned folder through bneck predict's path on ``images`` test images of each run."""
    from bneck.pipeline.predict import classify

    def spread(paths: list[str]) -> list[str]:
        return [paths[i] for i in np.linspace(0, len(paths) - 1, min(images, len(paths))).astype(int)]

    inside, outside = spread(split_of(a, "test")[2]), spread(split_of(b, "test")[2])
    info: dict = {}
    _, rows = classify(os.path.join(a, "finetuned"), inside + outside, info=info)
    distance = np.array([r["domain_distance"] for r in rows], dtype=float)
    flagged = np.array([r["out_of_domain"] for r in rows], dtype=bool)
    auroc = roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], distance)
    n = len(inside)
    return "bneck, fine-tuned model (predict)", auroc, float(flagged[:n].mean()), float(flagged[n:].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs=2, metavar="RUN_DIR", help="two run folders (features/ and finetuned/ inside)")
    parser.add_argument("--images", type=int, default=200, help="test images of each set for the fine-tuned part")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    start, table = time.perf_counter(), []
    for a, b in (args.runs, args.runs[::-1]):
        pair = f"{os.path.basename(a.rstrip('/'))} model, {os.path.basename(b.rstrip('/'))} images"
        rows = classifier_rows(a, b)
        if os.path.isdir(os.path.join(a, "finetuned")) and args.images:
            rows.append(finetuned_row(a, b, args.images))
        table += [(pair, *row) for row in rows]
    print(f"{'pair':<52}{'score':<44}{'AUROC':>7}{'false flags':>13}{'detected':>10}")
    for pair, name, auroc, false_flags, detected in table:
        print(f"{pair:<52}{name:<44}{auroc:>7.4f}{false_flags:>13.3f}{detected:>10.3f}")
    if args.json:
        keys = ("pair", "score", "auroc", "false_flags", "detected")
        with open(args.json, "w") as handle:
            json.dump([dict(zip(keys, row)) for row in table], handle, indent=1)
    print(f"\nwall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
