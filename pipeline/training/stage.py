"""Stage 2: train classifiers on cached features, score them, save them, rank them.

Each classifier lands in ``OUT/NAME/`` with its model, ``metrics.json``, plots,
``splits.json`` and a typed ``manifest.json`` hashing everything (``fit``). A folder
that already holds the same classifier trained with the same options on the same
feature files (by sha256) is reused, not trained again, and every classifier that is
trained says why (``reuse``). ``OUT/leaderboard.csv`` ranks the classifiers of the
call by validation accuracy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import cast

import numpy as np

from bneck.core.folders import check_folder, claim_folder, remove_owned
from bneck.core.options import takes_options
from bneck.core.private import releases_claims
from bneck.pipeline.artifacts import read_verified, verified_json
from bneck.pipeline.data import IN_MEMORY_FACTOR, check_budget, open_feature_set, physical_memory
from bneck.pipeline.manifests import ClassifierManifest
from bneck.pipeline.training.checks import check_data, validate_classifiers
from bneck.pipeline.training.classifiers import build_streamed, is_keras
from bneck.pipeline.training.fit import fit_classifier, trains_on_pooled_rows
from bneck.pipeline.training.heads import large_dense_note
from bneck.pipeline.training.leaderboard import Leaderboard, Result, write_leaderboard
from bneck.pipeline.training.options import TRAIN, classifier_config
from bneck.pipeline.training.parallel import candidates_backend
from bneck.pipeline.training.reuse import classifier_reuse

__all__ = ["Leaderboard", "Result", "train"]

log = logging.getLogger(__name__)


@releases_claims
@takes_options(TRAIN)
def train(
    features_dir: str,
    classifiers: Sequence[str],
    out_dir: str,
    *,
    epochs: int = 50,
    batch_size: int = 16,
    lr: float = 1e-3,
    optimizer: str = "rmsprop",
    units: int = 256,
    dropout: float = 0.5,
    early_stopping: int = 0,
    class_weight: str | None = None,
    seed: int = 0,
    reshape: str = "avg",
    pca: float | None = None,
    search: str | None = None,
    folds: int = 5,
    keep: str = "all",
    max_memory: str | None = None,
    engine: str = "local",
    address: str | None = None,
    retrain: bool = False,
    overrides: dict | None = None,
    verbose: bool = True,
) -> Leaderboard:
    """Train each classifier on ``features_dir``'s split files into ``out_dir``; returns the Leaderboard.

    The keyword options are ``training.options.TRAIN``'s, checked against it before any work
    (``takes_options``: the Keras heads take epochs to class_weight, scikit-learn models reshape
    to folds, both seed); ``classifiers`` are registered names (``bneck.pipeline.training.classifiers``);
    ``overrides`` maps a classifier to options for it alone (``{"svm": {"pca": 8}}``). A classifier
    whose folder is current is reused unless ``retrain``. Everything is checked, and so is what the
    features can support, before any fit. Raises ConfigError for unknown options or bad values, DatasetError for
    data a classifier cannot learn from, FeatureFileError for missing or mismatched
    feature files.
    """
    opts = {name: value for name, value in locals().items() if name in TRAIN}  # the checked options, by name
    names = validate_classifiers(classifiers)
    configs = {name: classifier_config(name, opts, overrides, names) for name in names}
    out_dir = check_folder(out_dir, "models", inputs=[features_dir])
    for name in names:
        check_folder(os.path.join(out_dir, name), "classifier", option="the classifier folder")
    fs = open_feature_set(features_dir)
    check_data(fs, configs)
    streamed = {name: _streams(name, cfg, fs, opts["max_memory"], verbose) for name, cfg in configs.items()}
    for name, cfg in configs.items():  # one that cannot stream is refused before any fit
        if streamed[name] and not is_keras(name):
            build_streamed(name, cfg["reshape"], cfg["seed"])
    rows = _rows_per_block(fs, opts["batch_size"], opts["max_memory"])
    board = _train_all(configs, fs, (features_dir, out_dir), streamed, rows, opts, verbose)
    if opts["keep"] == "best":
        _keep_only_best(board)
    write_leaderboard(os.path.join(out_dir, "leaderboard.csv"), board.results)
    return board


def _train_all(configs: dict, fs, folders: tuple, streamed: dict, rows: int, opts: dict, verbose: bool) -> Leaderboard:
    """Train or reuse every classifier into ``folders[1]`` (made from the features in ``folders[0]``; a
    --search's candidates run where ``opts["engine"]`` says, the cluster joined before the folder is
    claimed); ranked."""
    features_dir, out_dir = folders
    board = Leaderboard(out_dir)
    searching = any(cfg.get("search") for cfg in configs.values())
    if opts["engine"] == "ray" and not searching and verbose:
        log.info("--engine ray runs the candidates of a --search; without one every classifier trains here")
    with candidates_backend(opts["engine"], opts["address"], needed=searching):
        claim_folder(out_dir, "models", inputs=[features_dir])
        for name, cfg in configs.items():
            result = _train_or_reuse(name, cfg, fs, out_dir, streamed[name], rows, opts["retrain"], verbose)
            board.results.append(result)
    board.rank()
    return board


def _streams(name: str, cfg: dict, fs, max_memory: int | None, verbose: bool) -> bool:
    """True when classifier ``name`` must read its features from disk in blocks. A model that pools the
    spatial grid first (gap-dense, scikit-learn's --reshape avg/max) holds only the pooled rows; every
    other model the whole features.
    Without --max-memory the choice is bneck's (``check_budget``), and it says so when it streams."""
    total = sum(fs.nbytes(s) for s in fs.files)
    pooled = trains_on_pooled_rows(name, cfg, fs.feature_shape)
    need = total // int(np.prod(fs.feature_shape[:-1])) if pooled else total
    streamed = check_budget(need, max_memory)
    if streamed and verbose:
        log.info(
            f"{name}: its features take {need / 2**30:.1f} GiB in memory; "
            + (
                f"trained in memory they would need about {IN_MEMORY_FACTOR}x that, more than half of this "
                f"machine's {physical_memory() / 2**30:.0f} GiB, so {name} streams them from disk in blocks "
                "(--max-memory SIZE sets the budget yourself)"
                if max_memory is None
                else f"more than --max-memory ({max_memory:,} bytes), so {name} streams them from disk in blocks"
            )
            + ("" if is_keras(name) else " and trains with partial_fit (SGD), not its in-memory solver")
        )
    return streamed


def _rows_per_block(fs, batch_size: int, max_memory: int | None) -> int:
    """Rows per block read from disk: at most a quarter of the budget (one training batch at least)."""
    row_bytes = max(1, fs.nbytes("train") // max(1, fs.attrs["train"]["n_images"]))
    return max(batch_size, (max_memory or 1 << 30) // (4 * row_bytes))


def _train_or_reuse(
    name: str, cfg: dict, fs, out_dir: str, streamed: bool, rows: int, retrain: bool, verbose: bool
) -> Result:
    """The Result of classifier ``name``: its current folder reused (unless ``retrain``), else trained."""
    decision = classifier_reuse(out_dir, name, cfg, fs.sha256, streamed)
    if decision.reused and not retrain:
        return _reused(name, os.path.join(out_dir, name))
    why = "--retrain" if decision.reused else decision.why
    if verbose:
        log.info(f"training {name} ({why})" + (" ..." if not is_keras(name) else ""))
        if name == "dense" and (note := large_dense_note(fs.feature_shape, cfg["units"], len(fs.class_names))):
            log.info(note)
    return fit_classifier(name, cfg, fs, out_dir, streamed, rows, verbose, why)


def _keep_only_best(board: Leaderboard) -> None:
    """Remove every ranked classifier's folder but the first, and keep only its Result."""
    for result in board.results[1:]:
        remove_owned(result.folder, "classifier")
    board.results = board.results[:1]


def _reused(name: str, folder: str) -> Result:
    """The Result of a current classifier folder, from its verified metrics."""
    verified = read_verified(folder)
    metrics = verified_json(verified, "metrics.json")
    manifest = cast(ClassifierManifest, verified.manifest)  # a classifier folder: read_verified checked its kind
    return Result(
        name, verified.folder, metrics, metrics.get("fit_seconds", 0.0), manifest.streamed, reused=True, why="unchanged"
    )
