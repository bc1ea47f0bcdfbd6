"""Stage 2's options: one table for ``train()``, ``bneck train`` and ``[train]`` in a run's config."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bneck.core.errors import ConfigError
from bneck.core.options import Option, OptionTable
from bneck.features.extraction.options import ENGINES
from bneck.pipeline.training.classifiers import ClassifierNames, is_keras
from bneck.pipeline.training.heads import OPTIMIZERS
from bneck.pipeline.training.sklearn_models import RESHAPES

# Every registered classifier's name, read from the registry at each use (help texts, config choices).
CLASSIFIERS = ClassifierNames()


def parse_size(text) -> int:
    """Parse '512M', '2G', '1500K' or a byte count; raises ConfigError."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"--max-memory must be a size such as 512M, 2G or a byte count. Received: max_memory={text!r}."
        )
    power = " KMGT".index(match.group(2).upper() or " ")
    size = int(float(match.group(1)) * 1024**power)
    if size < 1:
        raise ConfigError(f"--max-memory must be at least one byte. Received: max_memory={text!r}.")
    return size


def _pca(value):
    """An int >= 1 keeps that many components; a fraction in (0, 1) keeps that share of the variance."""
    if value >= 1:
        if value != int(value):
            raise ConfigError(
                f"--pca must be a whole number of components (>= 1) or a fraction of the variance "
                f"in (0, 1). Received: pca={value!r}."
            )
        return int(value)
    return float(value)


# Every number an option takes is bounded (tests/core/test_options.py walks them): a Dense layer of
# MAX_UNITS on a 62,720-wide flattened grid already holds 1 billion weights.
MAX_EPOCHS = 10_000
MAX_UNITS = 16_384

HEAD_OPTIONS = ("epochs", "batch_size", "lr", "optimizer", "units", "dropout", "early_stopping", "class_weight", "seed")
SKLEARN_OPTIONS = ("reshape", "pca", "search", "folds", "seed")

TRAIN = OptionTable(
    "train",
    [
        Option("epochs", int, 50, "Keras heads: epochs", low=1, high=MAX_EPOCHS),
        Option("batch_size", int, 16, "Keras heads: batch size", low=1, high=65536),
        Option("lr", float, 1e-3, "Keras heads: learning rate", low=0, open_low=True, high=10),
        Option("optimizer", str, "rmsprop", "Keras heads: optimizer", choices=OPTIMIZERS),
        Option("units", int, 256, "Keras heads: units of the hidden Dense layer", low=1, high=MAX_UNITS),
        Option("dropout", float, 0.5, "Keras heads: dropout rate", low=0, high=1, open_high=True),
        Option(
            "early_stopping",
            int,
            0,
            "Keras heads: stop after this many epochs without a better val_loss, restoring the best weights (0: off)",
            low=0,
            high=MAX_EPOCHS,
            metavar="PATIENCE",
        ),
        Option(
            "class_weight",
            str,
            None,
            "Keras heads: weigh classes by inverse frequency",
            choices=("balanced",),
            nullable=True,
        ),
        Option("seed", int, 0, "seed of initialisation, shuffling and models", low=0, high=2**32 - 1),
        Option("reshape", str, "avg", "scikit-learn: turn the spatial grid into a vector", choices=RESHAPES),
        Option(
            "pca",
            float,
            None,
            "scikit-learn: PCA to N components (an integer) or to a fraction of the variance (in (0, 1)) first",
            low=0,
            open_low=True,
            high=1_000_000,
            check_value=_pca,
            metavar="N",
        ),
        Option(
            "search",
            str,
            None,
            "scikit-learn: tune a small grid on the validation split, or by k-fold on train+validation",
            choices=("validation", "kfold"),
            nullable=True,
        ),
        Option("folds", int, 5, "scikit-learn: folds for --search kfold", low=2, high=100),
        Option("keep", str, "all", "keep every classifier's folder, or only the best", choices=("all", "best")),
        Option(
            "max_memory",
            str,
            None,
            "stream features from disk when they are larger than this (e.g. 512M; default: when training "
            "them in memory would take more than half of this machine's memory)",
            check_value=parse_size,
            metavar="SIZE",
            coerce=lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v,
        ),
        Option(
            "engine",
            str,
            "local",
            "scikit-learn --search: run its candidates here, or as tasks on a Ray cluster",
            choices=ENGINES,
        ),
        Option("address", str, None, "ray: the cluster to join, auto or HOST:PORT (default: start a local one)"),
        Option(
            "retrain",
            bool,
            False,
            "train even a classifier whose folder already holds it, trained with the "
            "same options on the same features (by default it is reused)",
        ),
    ],
)


def options_of(name: str) -> tuple[str, ...]:
    """Return the options that decide classifier ``name`` (the Keras heads' or scikit-learn's)."""
    return HEAD_OPTIONS if is_keras(name) else SKLEARN_OPTIONS


def check_override(name: str, options, prefix: str, noun: str = "option") -> dict:
    """Return ``options`` for classifier ``name`` alone, checked: only keys it takes (``seed`` aside:
    one per call), each against ``TRAIN``. Raises ConfigError naming ``noun`` ``prefix.key``."""
    if not isinstance(options, dict):
        raise ConfigError(f"{noun} {prefix} must be a table of options for {name}. Received: {options!r}.")
    allowed = [k for k in options_of(name) if k != "seed"]
    for key in options:
        if key not in allowed:
            raise ConfigError(f"unknown {noun} '{prefix}.{key}'; {name} takes: {', '.join(allowed)}.")
    return {k: TRAIN[k].check(v, f"{noun} {prefix}.{k}") for k, v in options.items()}


def classifier_config(name: str, opts: dict, overrides: dict | None, names: Sequence[str]) -> dict:
    """Return the options that decide classifier ``name``: ``opts`` (checked by ``TRAIN``), then its
    ``overrides`` (``{name: {option: value}}``, checked here; every name must be among ``names``)."""
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides must map a classifier to a table of its options. Received: {overrides!r}.")
    for other in overrides:
        if other not in names:
            raise ConfigError(
                f"overrides configure {other!r}, which is not among the classifiers of this call ({', '.join(names)})."
            )
    own = check_override(name, overrides.get(name, {}), f"overrides.{name}")
    return {k: {**opts, **own}[k] for k in options_of(name)}
