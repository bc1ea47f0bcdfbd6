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
from features.errors import ConfigError, DatasetError, choice_error
from features.outputs import check_folder, claim_folder, remove_owned
from features.progress import format_table, progress_bar

from ..artifacts import staged_folder, write_history, write_json, write_manifest
from ..data import FeatureSet, check_budget, open_feature_set
from .heads import HEADS
from ..image_splits import splits_record, write_splits
from ..metrics import scores
from .sklearn_models import GRIDS, MIN_PER_CLASS
from .options import CLASSIFIERS, HEAD_OPTIONS, SKLEARN_OPTIONS, TRAIN  # noqa: F401  (re-exported)



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


def validate_classifiers(classifiers: Sequence[str]) -> list[str]:
    """Check classifier names; returns them. Raises ConfigError."""
    names = [c.strip() for c in classifiers if c.strip()]
    if not names:
        raise ConfigError(f"--classifier needs at least one of {', '.join(CLASSIFIERS)}. Received: none.")
    for name in names:
        if name not in CLASSIFIERS:
            raise choice_error("classifier", CLASSIFIERS, name)
    if len(set(names)) != len(names):
        raise ConfigError(f"--classifier names each classifier once. Received: {','.join(names)}.")
    return names


def check_data(fs: FeatureSet, names: Sequence[str], opts: dict) -> None:
    """Refuse, before any fit, what these features cannot support (see ``check_counts``)."""
    shape = fs.feature_shape
    width = shape[-1] if opts["reshape"] != "flatten" else int(np.prod(shape))
    check_counts(names, opts, fs.class_names, fs.labels("train"), fs.labels("validation"), fs.folder, width)


def check_counts(names: Sequence[str], opts: dict, class_names: Sequence[str], train_labels, validation_labels,
                 where: str, width: Optional[int] = None) -> None:
    """Refuse what the data cannot support: one class, a class without training images, too few images
    per class for a classifier's internal cross-validation, more PCA components than training images
    (or features, given ``width``), more folds than the smallest class has images. Raises
    DatasetError or ConfigError."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(class_names))
    if len(class_names) < 2:
        raise DatasetError(f"{where} holds one class ({class_names[0]!r}); a classifier needs at "
                           f"least two. Add a class folder.")
    if (counts == 0).any():
        missing = [c for c, n in zip(class_names, counts) if n == 0]
        raise DatasetError(f"the training split of {where} has no image of class(es) {', '.join(missing)}; "
                           "every class needs training images.")
    sklearn = [n for n in names if n not in HEADS]
    for name in sklearn:
        if counts.min() < MIN_PER_CLASS.get(name, 1):
            raise DatasetError(f"{name} calibrates its scores by cross-validation and needs at least "
                               f"{MIN_PER_CLASS[name]} training images of every class; the smallest class of "
                               f"{where} has {counts.min()}. Add images or choose another classifier.")
    pca = opts["pca"]
    if sklearn and isinstance(pca, int):
        limit = min(len(train_labels), width) if width else len(train_labels)
        if pca > limit:
            raise ConfigError(f"--pca {pca} asks for more components than the {len(train_labels)} training "
                              f"images{f' and {width} features' if width else ''} allow: at most {limit}. "
                              f"Give a smaller --pca, or a fraction of the variance such as 0.95.")
    if sklearn and opts["search"] == "kfold":
        both = np.concatenate([train_labels, validation_labels]).astype(np.int64)
        smallest = int(np.bincount(both, minlength=len(class_names)).min())
        if opts["folds"] > smallest:
            raise ConfigError(f"--folds {opts['folds']} is more than the {smallest} image(s) of the smallest "
                              f"class in train+validation; use --folds {max(2, smallest)} or fewer.")


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
    from ..plots import training_curves

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
    from ..model_io import save_sklearn
    from .sklearn_models import StreamedLinear, check_out_of_core, make_pipeline

    start = time.perf_counter()
    extra = {}
    if streamed:
        check_out_of_core(name)
        model = StreamedLinear(name, cfg["reshape"], seed=cfg["seed"])
        model.fit_blocks(lambda rng: fs.blocks("train", rows, rng), range(len(fs.class_names)))
    else:
        counts = np.bincount(fs.labels("train"), minlength=len(fs.class_names))
        pipe = make_pipeline(name, cfg["reshape"], cfg["pca"], cfg["seed"], counts)
        if cfg["search"]:
            model, extra = _search(name, pipe, cfg, fs)
        else:
            model = pipe.fit(*fs.load("train"))
    fit_s = time.perf_counter() - start
    save_sklearn(model, os.path.join(folder, "model.skops"))
    probs = _proba_all(model.predict_proba, fs, streamed, rows)
    return probs, fit_s, {"model_file": "model.skops", "search": extra}


def _train_one(name, opts, fs: FeatureSet, out_dir, streamed, rows, verbose) -> Result:
    from ..plots import confusion_plots

    keras_head = name in HEADS
    cfg = {k: opts[k] for k in (HEAD_OPTIONS if keras_head else SKLEARN_OPTIONS)}
    final = os.path.join(out_dir, name)
    with staged_folder(final, "classifier") as folder:
        trainer = _train_keras if keras_head else _train_sklearn
        probs, fit_s, extra = trainer(name, cfg, fs, streamed, rows, folder, verbose)
        metrics = {split: scores(y, p, fs.class_names) for split, (p, y) in probs.items()}
        metrics["fit_seconds"] = fit_s
        write_json(os.path.join(folder, "metrics.json"), metrics)
        write_splits(folder, splits_record(fs.attrs))
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


def train(features_dir: str, classifiers: Sequence[str], out_dir: str, *, verbose: bool = True,
          **options) -> Leaderboard:
    """Train each classifier on ``features_dir``'s split files; returns the Leaderboard.

    ``options`` are ``train_options.TRAIN``'s (epochs, batch_size, lr, optimizer, units,
    dropout, early_stopping, class_weight, seed, reshape, pca, search, folds, keep,
    max_memory); each is checked, and so is what the features can support, before
    any fit. Raises ConfigError for unknown options or bad values, DatasetError for
    data a classifier cannot learn from, FeatureFileError for missing or mismatched
    feature files.
    """
    opts = TRAIN.check(options)
    names = validate_classifiers(classifiers)
    keep, max_memory = opts["keep"], opts["max_memory"]
    out_dir = check_folder(out_dir, "models", inputs=[features_dir])
    for name in names:
        check_folder(os.path.join(out_dir, name), "classifier", option="the classifier folder")
    fs = open_feature_set(features_dir)
    check_data(fs, names, opts)
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
