"""Fitting one classifier on a feature set and writing its folder: model, scores, plots, manifest.

The folder is written under a temporary name and moved into place (``staged_folder``),
so a crash never leaves a half-written classifier that looks complete.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from bneck.core.errors import BneckError
from bneck.core.folders import staged_folder
from bneck.core.progress import progress_bar
from bneck.pipeline.artifacts import write_history, write_json, write_manifest
from bneck.pipeline.data import FeatureSet
from bneck.pipeline.domain import feature_set_domain, write_domain
from bneck.pipeline.image_splits import splits_record, write_splits
from bneck.pipeline.manifests import ClassifierManifest, FeatureFileRef
from bneck.pipeline.metrics import scores
from bneck.pipeline.predictions_csv import write_predictions
from bneck.pipeline.training.classifiers import build_sklearn, build_streamed, get_classifier, is_keras
from bneck.pipeline.training.leaderboard import Result

log = logging.getLogger(__name__)


class TrainingDiverged(BneckError):
    """Training produced NaN or infinite predictions (a learning rate too high for the data)."""


def fit_classifier(
    name: str, cfg: dict, fs: FeatureSet, out_dir: str, streamed: bool, rows: int, verbose: bool, why: str = ""
) -> Result:
    """Fit classifier ``name`` with its options ``cfg`` on ``fs`` into ``out_dir/name``; returns its Result.

    ``streamed``: read the features from disk in blocks of ``rows`` rows.
    """
    from bneck.pipeline.plots import confusion_plots

    keras_head = get_classifier(name).kind == "keras"
    final = os.path.join(out_dir, name)
    with staged_folder(final, "classifier") as folder:
        trainer = _train_keras if keras_head else _train_sklearn
        probs, fit_s, extra = trainer(name, cfg, fs, streamed, rows, folder, verbose)
        if not all(np.isfinite(p).all() for p, _ in probs.values()):
            raise TrainingDiverged(
                f"{name} diverged: its predictions are NaN or infinite (learning rate {cfg.get('lr', '-')}, "
                f"optimizer {cfg.get('optimizer', '-')}). Nothing was saved for {name}; train it again with a "
                "smaller --lr (or another optimizer). Classifiers finished before it are kept."
            )
        metrics = {split: scores(y, p, fs.class_names) for split, (p, y) in probs.items()}
        metrics["fit_seconds"] = fit_s
        write_json(os.path.join(folder, "metrics.json"), metrics)
        write_predictions(
            os.path.join(folder, "predictions.csv"),
            fs.class_names,
            {s: (fs.attrs[s]["paths"], y, p) for s, (p, y) in probs.items()},
        )
        write_splits(folder, splits_record(fs.attrs))
        confusion_plots(metrics, fs.class_names, folder, name)
        write_domain(folder, feature_set_domain(fs, rows))
        write_manifest(
            folder,
            ClassifierManifest(
                kind="keras" if keras_head else "sklearn",
                classifier=name,
                config=cfg,
                streamed=streamed,
                class_names=fs.class_names,
                extractor_key=fs.extractor_key,
                extractor=fs.extractor,
                feature_shape=list(fs.feature_shape),
                weights_path=fs.attrs["train"].get("weights_path", ""),
                feature_files={s: FeatureFileRef(p, fs.sha256[s]) for s, p in fs.files.items()},
                metrics={
                    s: {"accuracy": m["accuracy"], "loss": m["loss"], "macro_f1": m["macro_f1"]}
                    for s, m in metrics.items()
                    if isinstance(m, dict)
                },
                **extra,
            ),
        )
    return Result(name, final, metrics, fit_s, streamed, reused=False, why=why)


def _proba_all(predict, fs: FeatureSet, parts_of) -> dict:
    """{split: (probabilities, labels)} of every split, ``parts_of(split)`` giving its (x, y) parts."""
    out = {}
    for split in fs.files:
        parts = [(predict(x), y) for x, y in parts_of(split)]
        out[split] = (np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts]))
    return out


def _train_keras(name, cfg, fs, streamed, rows, folder, verbose):
    from bneck.core.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    from bneck.pipeline.plots import training_curves
    from bneck.pipeline.training.heads import build_head, fit_head, proba
    from bneck.pipeline.training.sklearn_models import SpatialReshape

    keras.utils.set_random_seed(cfg["seed"])
    n_classes = len(fs.class_names)
    # gap-dense's pooling has no weights: on pooled rows (49 times fewer numbers for a 7x7 grid, read
    # block by block) its other layers train in memory whatever the data's size, then go under the pooling
    pooled = not streamed and trains_on_pooled_rows(name, cfg, fs.feature_shape)
    load = (lambda split: fs.reduced(split, SpatialReshape("avg"), rows)) if pooled else fs.load
    model = build_head(
        name, (fs.feature_shape[-1],) if pooled else fs.feature_shape, n_classes, cfg["units"], cfg["dropout"]
    )
    data = None if streamed else (load("train"), load("validation"))
    bar = progress_bar(cfg["epochs"], f"{name}", verbose, unit="epoch")

    def on_epoch(logs):
        bar.set_postfix(loss=f"{logs['loss']:.3f}", val_acc=f"{logs['val_accuracy']:.3f}", refresh=False)
        bar.update(1)

    start = time.perf_counter()
    try:
        history = fit_head(
            model, n_classes, cfg, *(data or (None, None)), streamed=streamed, fs=fs, block_rows=rows, on_epoch=on_epoch
        )
    finally:
        bar.close()
    fit_s = time.perf_counter() - start
    # a fresh head takes the weights: the whole head under pooled training, and never an optimizer (the
    # streamed path compiles; a saved optimizer is an object bneck never loads)
    saved = model
    if pooled or getattr(model, "optimizer", None) is not None:
        saved = build_head(name, fs.feature_shape, n_classes, cfg["units"], cfg["dropout"])
        saved.set_weights(model.get_weights())
    saved.save(os.path.join(folder, "model.keras"))
    saved.save_weights(os.path.join(folder, "head.weights.h5"))
    write_history(folder, history)
    training_curves(history, os.path.join(folder, "curves.png"), f"{name} head")
    probs = _proba_all(
        lambda x: proba(model, x), fs, lambda split: fs.blocks(split, rows) if streamed else [load(split)]
    )
    return (
        probs,
        fit_s,
        {
            "model_file": "model.keras",
            "head_weights_file": "head.weights.h5",
            "epochs_run": len(history["loss"]),
            "trained": True,
        },
    )


def _search(name, pipe, cfg, load):
    """Tune ``pipe`` on the registry's grid for ``name`` (``load(split)``: its (x, y)); the candidates
    run through joblib's active backend (``parallel.candidates_backend``: here, or on a Ray cluster)."""
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, ParameterGrid

    x, y = load("train")
    xv, yv = load("validation")
    kfold = cfg["search"] == "kfold"
    fitted_on = (len(x) + len(xv)) * (cfg["folds"] - 1) // cfg["folds"] - 1 if kfold else len(x)
    grid_of = _feasible(get_classifier(name).grid, fitted_on)  # checks.check_counts refused a --search without one
    if kfold:
        grid = GridSearchCV(pipe, grid_of, cv=cfg["folds"], n_jobs=-1, scoring="accuracy")
        grid.fit(np.concatenate([x, xv]), np.concatenate([y, yv]))
        return grid.best_estimator_, {"best_params": grid.best_params_, "cv_accuracy": grid.best_score_}

    def score(params):
        model = clone(pipe).set_params(**params).fit(x, y)
        return model.score(xv, yv)

    candidates = list(ParameterGrid(grid_of))
    accs = Parallel(n_jobs=-1)(delayed(score)(p) for p in candidates)
    best = candidates[int(np.argmax(accs))]
    return clone(pipe).set_params(**best).fit(x, y), {"best_params": best, "validation_accuracy": max(accs)}


def _feasible(grid, fitted_on: int):
    """``grid`` without neighbour counts above the fewest images a candidate is fitted on (scikit-learn
    fails those fits, each with a traceback of its own); the smallest count always stays."""
    values = grid.get("clf__n_neighbors") if isinstance(grid, dict) else None
    if not values:
        return grid
    return {**grid, "clf__n_neighbors": [v for v in values if v <= fitted_on] or [min(values)]}


def trains_on_pooled_rows(name: str, cfg: dict, feature_shape: tuple) -> bool:
    """Whether classifier ``name`` (options ``cfg``) starts by pooling a spatial grid that has no weights
    to learn, so it trains on the pooled rows: gap-dense, and scikit-learn models that do not flatten."""
    from bneck.pipeline.training.heads import pools_first

    if is_keras(name):
        return pools_first(name, feature_shape)
    return cfg.get("reshape") != "flatten" and len(feature_shape) >= 2


def _pooled_tail(pipe, fs: FeatureSet, rows: int, pooled: bool):
    """When ``pooled`` (``pipe`` starts by pooling the grid): (the pooling step fitted, the rest of the
    pipeline, a loader of pooled rows read in blocks), so the full features are never in memory; else
    (None, pipe, fs.load)."""
    from sklearn.pipeline import Pipeline

    reshape = pipe.steps[0][1]
    if not pooled:
        return None, pipe, fs.load
    reshape.fit(np.zeros((1, *fs.feature_shape), np.float32))
    return reshape, Pipeline(pipe.steps[1:]), lambda split: fs.reduced(split, reshape, rows)


def _train_sklearn(name, cfg, fs, streamed, rows, folder, verbose):
    from sklearn.pipeline import Pipeline

    from bneck.pipeline.model_io import save_sklearn

    start = time.perf_counter()
    extra = {}
    if streamed:
        model = build_streamed(name, cfg["reshape"], cfg["seed"])
        model.fit_blocks(lambda rng: fs.blocks("train", rows, rng), range(len(fs.class_names)))
        fit_s = time.perf_counter() - start
        probs = _proba_all(model.predict_proba, fs, lambda split: fs.blocks(split, rows))
    else:
        counts = np.bincount(fs.labels("train"), minlength=len(fs.class_names))
        pipe = build_sklearn(name, cfg["reshape"], cfg["pca"], cfg["seed"], counts)
        pooling, tail, load = _pooled_tail(pipe, fs, rows, trains_on_pooled_rows(name, cfg, fs.feature_shape))
        if cfg["search"]:
            tail, extra = _search(name, tail, cfg, load)
            if verbose:
                chosen = ", ".join(f"{k.removeprefix('clf__')}={v}" for k, v in extra["best_params"].items())
                score = extra.get("cv_accuracy", extra.get("validation_accuracy"))
                log.info(
                    f"{name}: --search {cfg['search']} chose {chosen} (accuracy {score:.3f}; in its manifest.json)"
                )
        else:
            tail = tail.fit(*load("train"))
        fit_s = time.perf_counter() - start
        model = tail if pooling is None else Pipeline([("reshape", pooling), *tail.steps])
        probs = _proba_all(tail.predict_proba, fs, lambda split: [load(split)])
    save_sklearn(model, os.path.join(folder, "model.skops"))
    return probs, fit_s, {"model_file": "model.skops", "search": extra}
