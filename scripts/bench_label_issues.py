"""Measure the "likely label errors" finder against injected label noise (the figures in docs/results.md).

The report's finder (``pipeline/runner/health.py``) takes out-of-fold probabilities from
bneck's logistic regression (``out_of_fold_proba``: StandardScaler + LogisticRegression(C=0.1),
StratifiedKFold(5, shuffle=True, random_state=0)) on the pooled, L2-normalised training
features, and lists the images whose own class gets a probability below
``LABEL_ISSUE_BELOW`` (the ``p_given<0.05`` row below, marked ``<- bneck``).

This script measures how well candidate listing rules find label errors that we put there
ourselves, the way a user makes them: a fraction (``--noise``, default 5%) of the training
images, chosen at random per seed, is moved to a uniformly random *other* class. Features
do not depend on the folder, so relabelling the rows is exactly equivalent. For each rule:

* precision = injected images listed / images listed
* recall    = injected images listed / injected images

reported as mean [min, max] over seeds, plus a Wilson 95% interval on the counts pooled
over seeds. Images that were already mislabelled in the original data count as false
alarms here; the ``clean`` column (images the rule lists with no noise injected) and the
``p_adj`` column (precision if the noisy-run false alarms that the rule also lists on the
clean data were genuine errors) give that context.

Rules (p = out-of-fold probabilities, y = given label):

* ``current``          : p[j] >= mean self-confidence of class j, for some j != y (the product today)
* ``margin>=t``        : max_{j != y} p[j] - p[y] >= t
* ``p_given<t``        : p[y] < t
* ``current+margin>=t``: the current rule, and the listed class's p[j] - p[y] >= t

Usage (the feature folders of the two reference runs, made by
``scripts/bench_finetune_accuracy.py --only cats-mobilenetv2,blood-mobilenetv2 --out /work/runs/acc``;
about 10 s):
    .venv/bin/python scripts/bench_label_issues.py \
        --features-dirs /work/runs/acc/cats-mobilenetv2/features /work/runs/acc/blood-mobilenetv2/features
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from bneck.pipeline.runner.health import LABEL_ISSUE_BELOW, out_of_fold_proba

MARGINS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
P_GIVEN = (0.5, 0.3, 0.2, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)
TARGET_PRECISION = 0.5


# --------------------------------------------------------------------------- data


def load_train(features_dir: str, block: int = 256) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pooled unit vectors, labels and class names of a run's training split (as the product pools them)."""
    with h5py.File(Path(features_dir) / "train.h5", "r") as f:
        feats = f["features"]
        parts = []
        for start in range(0, len(feats), block):
            b = feats[start : start + block]
            parts.append(b.reshape(len(b), -1, b.shape[-1]).mean(axis=1) if b.ndim > 2 else b)
        labels = np.asarray(f["labels"][:], dtype=np.int64)
        class_names = json.loads(f.attrs["class_names"])
    x = np.concatenate(parts).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, labels, class_names


def inject_noise(labels: np.ndarray, n_classes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Move round(fraction * N) random rows to a uniformly random other class; returns (noisy labels, moved mask)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    moved = np.zeros(n, bool)
    moved[rng.choice(n, size=round(fraction * n), replace=False)] = True
    noisy = labels.copy()
    shift = rng.integers(1, n_classes, size=moved.sum())  # 1..K-1: never the original class
    noisy[moved] = (labels[moved] + shift) % n_classes
    return noisy, moved


# --------------------------------------------------------------------------- finder


def oof_proba(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold predicted probabilities: the report's own function."""
    proba = out_of_fold_proba(x, labels, int(labels.max()) + 1, seed)
    assert proba is not None, "every class needs two training images"
    return proba


@dataclass
class Scores:
    current: np.ndarray  # bool: the product's rule lists the image
    current_margin: np.ndarray  # p[j] - p[y] for the class j the product names (-inf when not listed)
    margin: np.ndarray  # max_{j != y} p[j] - p[y]
    p_given: np.ndarray  # p[y]


def score(proba: np.ndarray, labels: np.ndarray) -> Scores:
    n, k = proba.shape
    rows = np.arange(n)
    p_given = proba[rows, labels]
    self_conf = np.array([proba[labels == j, j].mean() for j in range(k)])
    others = proba.copy()
    others[rows, labels] = -np.inf
    margin = others.max(axis=1) - p_given
    passing = np.where(others >= self_conf[None, :], others, -np.inf)  # classes j != y over their threshold
    current = np.isfinite(passing).any(axis=1)
    current_margin = np.where(current, passing.max(axis=1) - p_given, -np.inf)
    return Scores(current, current_margin, margin, p_given)


def rules() -> list[tuple[str, str, float | None, callable]]:
    """(family, name, threshold, mask function) for every rule measured."""
    out = [("current", "current", None, lambda s: s.current)]
    out += [("margin", f"margin>={t:.2f}", t, lambda s, t=t: s.margin >= t) for t in MARGINS]
    out += [("p_given", f"p_given<{t:.2f}", t, lambda s, t=t: s.p_given < t) for t in P_GIVEN]
    out += [("current+margin", f"current+margin>={t:.2f}", t, lambda s, t=t: s.current_margin >= t) for t in MARGINS]
    return out


# --------------------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def summarize(per_seed: list[dict]) -> dict:
    prec = np.array([r["tp"] / r["flagged"] if r["flagged"] else np.nan for r in per_seed])
    rec = np.array([r["tp"] / r["injected"] for r in per_seed])
    tp, fl, inj = (sum(r[key] for r in per_seed) for key in ("tp", "flagged", "injected"))
    adj = sum(r["tp"] + r["fp_clean_suspect"] for r in per_seed)
    nan = float("nan")
    return {
        "flagged_mean": float(np.mean([r["flagged"] for r in per_seed])),
        "precision_mean": float(np.nanmean(prec)) if np.isfinite(prec).any() else nan,
        "precision_min": float(np.nanmin(prec)) if np.isfinite(prec).any() else nan,
        "precision_max": float(np.nanmax(prec)) if np.isfinite(prec).any() else nan,
        "precision_empty_seeds": int(np.isnan(prec).sum()),
        "recall_mean": float(rec.mean()),
        "recall_min": float(rec.min()),
        "recall_max": float(rec.max()),
        "precision_pooled": tp / fl if fl else nan,
        "precision_wilson": wilson(tp, fl),
        "recall_pooled": tp / inj,
        "recall_wilson": wilson(tp, inj),
        "precision_adjusted": adj / fl if fl else nan,
    }


# --------------------------------------------------------------------------- benchmark


def bench_dataset(features_dir: str, noise: float, seeds: int, cv_seed: int = 0) -> dict:
    x, labels, class_names = load_train(features_dir)
    k = len(class_names)
    all_rules = rules()

    clean_scores = score(oof_proba(x, labels, cv_seed), labels)
    clean_masks = {name: fn(clean_scores) for _, name, _, fn in all_rules}

    per_rule: dict[str, list[dict]] = {name: [] for _, name, _, _ in all_rules}
    for seed in range(seeds):
        noisy, moved = inject_noise(labels, k, noise, seed)
        s = score(oof_proba(x, noisy, cv_seed), noisy)
        for _, name, _, fn in all_rules:
            listed = fn(s)
            per_rule[name].append(
                {
                    "flagged": int(listed.sum()),
                    "tp": int((listed & moved).sum()),
                    "injected": int(moved.sum()),
                    # false alarms the same rule also lists with no noise: possibly genuine label errors
                    "fp_clean_suspect": int((listed & ~moved & clean_masks[name]).sum()),
                }
            )
    results = {}
    for family, name, t, _ in all_rules:
        results[name] = {"family": family, "threshold": t, "clean_flagged": int(clean_masks[name].sum())}
        results[name].update(summarize(per_rule[name]))
    return {
        "features_dir": features_dir,
        "n": len(labels),
        "classes": k,
        "injected_per_seed": round(noise * len(labels)),
        "clean_oof_accuracy": float((clean_scores.margin < 0).mean()),
        "rules": results,
    }


def fmt(v: float, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(res: dict) -> None:
    print(
        f"\n== {res['features_dir']}: {res['n']} images, {res['classes']} classes, "
        f"{res['injected_per_seed']} injected per seed, clean out-of-fold accuracy {res['clean_oof_accuracy']:.3f}"
    )
    head = (
        f"{'rule':<24}{'clean':>6}{'listed':>8}  {'precision mean [min,max]':<26}{'pooled (Wilson 95%)':<22}"
        f"{'p_adj':>6}  {'recall mean [min,max]':<23}{'pooled (Wilson 95%)':<20}"
    )
    print(head)
    print("-" * len(head))
    for name, r in res["rules"].items():
        pl, ph = r["precision_wilson"]
        rl, rh = r["recall_wilson"]
        empty = f" ({r['precision_empty_seeds']} empty)" if r["precision_empty_seeds"] else ""
        cell = f"{fmt(r['precision_mean'])} [{fmt(r['precision_min'])},{fmt(r['precision_max'])}]{empty}"
        mark = "  <- bneck" if r["family"] == "p_given" and r["threshold"] == LABEL_ISSUE_BELOW else ""
        print(
            f"{name:<24}{r['clean_flagged']:>6}{r['flagged_mean']:>8.1f}  "
            f"{cell:<26}"
            f"{fmt(r['precision_pooled']) + ' (' + fmt(pl) + '-' + fmt(ph) + ')':<22}"
            f"{fmt(r['precision_adjusted']):>6}  "
            f"{fmt(r['recall_mean']) + ' [' + fmt(r['recall_min']) + ',' + fmt(r['recall_max']) + ']':<23}"
            f"{fmt(r['recall_pooled']) + ' (' + fmt(rl) + '-' + fmt(rh) + ')':<20}{mark}"
        )


def recommend(all_results: list[dict], target: float = TARGET_PRECISION) -> None:
    """Rules whose precision reaches ``target`` on every dataset, in every seed; best by worst-dataset mean recall."""
    names = list(all_results[0]["rules"])
    ok = []
    for name in names:
        rs = [res["rules"][name] for res in all_results]
        if all(r["precision_empty_seeds"] == 0 and r["precision_min"] >= target for r in rs):
            ok.append((min(r["recall_mean"] for r in rs), name))
    print(f"\n== rules with precision >= {target} in every seed on every dataset (by worst-dataset mean recall)")
    if not ok:
        print("none")
    for worst_recall, name in sorted(ok, reverse=True)[:8]:
        print(f"{name}  (worst-dataset mean recall {worst_recall:.2f})")
        for res in all_results:
            r = res["rules"][name]
            (pl, ph), (rl, rh) = r["precision_wilson"], r["recall_wilson"]
            print(
                f"    {Path(res['features_dir']).parent.name:<22} precision {r['precision_mean']:.2f} "
                f"(min {r['precision_min']:.2f}, pooled {pl:.2f}-{ph:.2f})  recall {r['recall_mean']:.2f} "
                f"(min {r['recall_min']:.2f}, pooled {rl:.2f}-{rh:.2f})  listed on clean data {r['clean_flagged']}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features-dirs", nargs="+", required=True, help="run feature folders holding train.h5")
    ap.add_argument("--noise", type=float, default=0.05, help="fraction of training images moved to a wrong class")
    ap.add_argument("--seeds", type=int, default=5, help="noise seeds 0..SEEDS-1")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    args = ap.parse_args()

    start = time.perf_counter()
    all_results = []
    for d in args.features_dirs:
        res = bench_dataset(d, args.noise, args.seeds)
        print_table(res)
        all_results.append(res)
    recommend(all_results)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))
    print(f"\nwall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
