"""Stage 2: train classifiers on cached features, score them, save them, rank them.

Each classifier lands in ``OUT/NAME/`` (written under a temporary name, then moved
into place) with its model, ``metrics.json``, plots and a ``manifest.json`` that
hashes everything; ``OUT/leaderboard.csv`` ranks the classifiers of the call by
validation accuracy.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from features.atomic import atomic_open
from features.errors import ConfigError, choice_error
from features.outputs import check_folder, claim_folder, remove_owned
from features.progress import format_table, progress_bar

from .artifacts import staged_folder, write_history, write_json, write_manifest
from .data import FeatureSet, check_budget, open_feature_set
from .heads import HEADS, OPTIMIZERS
from .metrics import scores
from .sklearn_models import GRIDS, RESHAPES, SKLEARN

CLASSIFIERS = HEADS + SKLEARN
HEAD_OPTIONS = ("epochs", "batch_size", "lr", "optimizer", "units", "dropout", "early_stopping",
                "class_weight", "seed")
SKLEARN_OPTIONS = ("reshape", "pca", "search", "folds", "seed")
DEFAULTS = dict(epochs=50, batch_size=16, lr=1e-3, optimizer="rmsprop", units=256, dropout=0.5,
                early_stopping=0, class_weight=None, seed=0, reshape="avg", pca=None,
                search=None, folds=5)


@dataclass
class Result:
    """One trained classifier: where it is and how it scored."""

    name: str
    folder: str
    metrics: dict
    fit_seconds: float
    streamed: bool = False

    def accuracy(self, split: str) -> Optional[float]:
        return self.metrics.get(split, {}).get("accuracy")


@dataclass
class Leaderboard:
    """Results of one ``train`` call, best validation accuracy first."""

    out_dir: str
    results: list[Result] = field(default_factory=list)

    def table(self) -> str:
        """Return the ranked table: classifier, validation/test accuracy, fit seconds."""
        def pct(v):
            return "-" if v is None else f"{100 * v:.1f}%"
        rows = [[r.name, pct(r.accuracy("validation")), pct(r.accuracy("test")),
                 round(r.fit_seconds, 2)] for r in self.results]
        return format_table(["classifier", "val acc", "test acc", "fit s"], rows)

    @property
    def best(self) -> Result:
        return self.results[0]


def validate_options(classifiers: Sequence[str], opts: dict) -> list[str]:
    """Check classifier names and option values; returns the names. Raises ConfigError."""
    names = [c.strip() for c in classifiers if c.strip()]
    if not names:
        raise ConfigError(f"--classifier needs at least one of {', '.join(CLASSIFIERS)}. Received: none.")
    for name in names:
        if name not in CLASSIFIERS:
            raise choice_error("classifier", CLASSIFIERS, name)
    if len(set(names)) != len(names):
        raise ConfigError(f"--classifier names each classifier once. Received: {','.join(names)}.")
    if opts["optimizer"] not in OPTIMIZERS:
        raise choice_error("optimizer", OPTIMIZERS, opts["optimizer"])
    if opts["reshape"] not in RESHAPES:
        raise choice_error("reshape", RESHAPES, opts["reshape"])
    if opts["class_weight"] not in (None, "balanced"):
        raise choice_error("class_weight", (None, "balanced"), opts["class_weight"])
    if opts["search"] not in (None, "validation", "kfold"):
        raise choice_error("search", (None, "validation", "kfold"), opts["search"])
    for key in ("epochs", "batch_size", "units"):
        if not isinstance(opts[key], int) or opts[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be a positive integer. "
                              f"Received: {key}={opts[key]!r}.")
    if not 0 <= opts["dropout"] < 1:
        raise ConfigError(f"--dropout must be in [0, 1). Received: dropout={opts['dropout']!r}.")
    if not opts["lr"] > 0:
        raise ConfigError(f"--lr must be positive. Received: lr={opts['lr']!r}.")
    return names


def _proba_all(predict, fs: FeatureSet, streamed: bool, rows: int) -> dict:
    out = {}
    for split in fs.files:
        if streamed:
            parts = [(predict(x), y) for x, y in fs.blocks(split, rows)]
            out[split] = (np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts]))
        else:
            x, y = fs.load(split)
            out[split] = (predict(x), y)
    return out


def _train_keras(name, cfg, fs, streamed, rows, folder, verbose):
    from features.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    from .heads import build_head, fit_head, proba
    from .plots import training_curves

    keras.utils.set_random_seed(cfg["seed"])
    n_classes = len(fs.class_names)
    model = build_head(name, fs.feature_shape, n_classes, cfg["units"], cfg["dropout"])
    data = None if streamed else (fs.load("train"), fs.load("validation"))
    bar = progress_bar(cfg["epochs"], f"{name}", verbose, unit="epoch")

    def on_epoch(logs):
        bar.set_postfix(loss=f"{logs['loss']:.3f}", val_acc=f"{logs['val_accuracy']:.3f}", refresh=False)
        bar.update(1)

    start = time.perf_counter()
    try:
        history = fit_head(model, n_classes, cfg, *(data or (None, None)), streamed=streamed, fs=fs,
                           block_rows=rows, on_epoch=on_epoch)
    finally:
        bar.close()
    fit_s = time.perf_counter() - start
    model.save(os.path.join(folder, "model.keras"))
    model.save_weights(os.path.join(folder, "head.weights.h5"))
    write_history(folder, history)
    training_curves(history, os.path.join(folder, "curves.png"), f"{name} head")
    probs = _proba_all(lambda x: proba(model, x), fs, streamed, rows)
    return probs, fit_s, {"model_file": "model.keras", "head_weights_file": "head.weights.h5",
                          "epochs_run": len(history["loss"]), "trained": True}


def _search(name, pipe, cfg, fs):
    from sklearn.model_selection import GridSearchCV, ParameterGrid
    from joblib import Parallel, delayed
    from sklearn.base import clone

    x, y = fs.load("train")
    if cfg["search"] == "kfold":
        xv, yv = fs.load("validation")
        grid = GridSearchCV(pipe, GRIDS[name], cv=cfg["folds"], n_jobs=-1, scoring="accuracy")
        grid.fit(np.concatenate([x, xv]), np.concatenate([y, yv]))
        return grid.best_estimator_, {"best_params": grid.best_params_, "cv_accuracy": grid.best_score_}
    xv, yv = fs.load("validation")

    def score(params):
        model = clone(pipe).set_params(**params).fit(x, y)
        return model.score(xv, yv)

    candidates = list(ParameterGrid(GRIDS[name]))
    accs = Parallel(n_jobs=-1)(delayed(score)(p) for p in candidates)
    best = candidates[int(np.argmax(accs))]
    return clone(pipe).set_params(**best).fit(x, y), {"best_params": best,
                                                      "validation_accuracy": max(accs)}


def _train_sklearn(name, cfg, fs, streamed, rows, folder, verbose):
    from .model_io import save_sklearn
    from .sklearn_models import StreamedLinear, check_out_of_core, make_pipeline

    start = time.perf_counter()
    extra = {}
    if streamed:
        check_out_of_core(name)
        model = StreamedLinear(name, cfg["reshape"], seed=cfg["seed"])
        model.fit_blocks(lambda rng: fs.blocks("train", rows, rng), range(len(fs.class_names)))
    else:
        pipe = make_pipeline(name, cfg["reshape"], cfg["pca"], cfg["seed"])
        if cfg["search"]:
            model, extra = _search(name, pipe, cfg, fs)
        else:
            model = pipe.fit(*fs.load("train"))
    fit_s = time.perf_counter() - start
    save_sklearn(model, os.path.join(folder, "model.skops"))
    probs = _proba_all(model.predict_proba, fs, streamed, rows)
    return probs, fit_s, {"model_file": "model.skops", "search": extra}


def _train_one(name, opts, fs: FeatureSet, out_dir, streamed, rows, verbose) -> Result:
    from .plots import confusion_plots

    keras_head = name in HEADS
    cfg = {k: opts[k] for k in (HEAD_OPTIONS if keras_head else SKLEARN_OPTIONS)}
    final = os.path.join(out_dir, name)
    with staged_folder(final, "classifier") as folder:
        trainer = _train_keras if keras_head else _train_sklearn
        probs, fit_s, extra = trainer(name, cfg, fs, streamed, rows, folder, verbose)
        metrics = {split: scores(y, p, fs.class_names) for split, (p, y) in probs.items()}
        metrics["fit_seconds"] = fit_s
        write_json(os.path.join(folder, "metrics.json"), metrics)
        confusion_plots(metrics, fs.class_names, folder, name)
        write_manifest(folder, {
            "kind": "keras" if keras_head else "sklearn", "classifier": name, "config": cfg,
            "streamed": streamed, "class_names": fs.class_names,
            "extractor_key": fs.extractor_key, "extractor": fs.extractor,
            "feature_shape": list(fs.feature_shape),
            "weights_path": fs.attrs["train"].get("weights_path", ""),
            "feature_files": {s: {"path": p, "sha256": fs.sha256[s]} for s, p in fs.files.items()},
            "metrics": {s: {"accuracy": m["accuracy"], "loss": m["loss"], "macro_f1": m["macro_f1"]}
                        for s, m in metrics.items() if isinstance(m, dict)},
            **extra})
    return Result(name, final, metrics, fit_s, streamed)


def train(features_dir: str, classifiers: Sequence[str], out_dir: str, *, keep: str = "all",
          max_memory: Optional[int] = None, verbose: bool = True, **options) -> Leaderboard:
    """Train each classifier on ``features_dir``'s split files; returns the Leaderboard.

    ``options`` override DEFAULTS (epochs, batch_size, lr, optimizer, units, dropout,
    early_stopping, class_weight, seed, reshape, pca, search, folds). Raises
    ConfigError for unknown options or bad values and FeatureFileError for
    missing or mismatched feature files.
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(DEFAULTS))}.")
    if keep not in ("all", "best"):
        raise choice_error("keep", ("all", "best"), keep)
    opts = {**DEFAULTS, **options}
    names = validate_options(classifiers, opts)
    out_dir = check_folder(out_dir, "models", inputs=[features_dir])
    for name in names:
        check_folder(os.path.join(out_dir, name), "classifier", option="the classifier folder")
    fs = open_feature_set(features_dir)
    streamed = check_budget(fs, max_memory)
    row_bytes = max(1, fs.nbytes("train") // max(1, fs.attrs["train"]["n_images"]))
    # Blocks read from disk take at most a quarter of the budget (one training batch at least).
    rows = max(opts["batch_size"], (max_memory or 1 << 30) // (4 * row_bytes))
    claim_folder(out_dir, "models", inputs=[features_dir])
    board = Leaderboard(out_dir)
    for name in names:
        if verbose and name not in HEADS:
            print(f"training {name} ...", file=sys.stderr, flush=True)
        board.results.append(_train_one(name, opts, fs, out_dir, streamed, rows, verbose))
    board.results.sort(key=lambda r: -(r.accuracy("validation") or 0.0))
    if keep == "best":
        for result in board.results[1:]:
            remove_owned(result.folder, "classifier")
        board.results = board.results[:1]
    _write_leaderboard(board)
    return board


def _write_leaderboard(board: Leaderboard) -> None:
    path = os.path.join(board.out_dir, "leaderboard.csv")
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "classifier", "val_accuracy", "test_accuracy", "fit_seconds", "folder"])
        for rank, r in enumerate(board.results, 1):
            test = r.accuracy("test")
            writer.writerow([rank, r.name, f"{r.accuracy('validation'):.4f}",
                             "" if test is None else f"{test:.4f}", f"{r.fit_seconds:.2f}", r.folder])
