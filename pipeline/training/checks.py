"""What stage 2 refuses before any fit: unknown classifiers, and data a classifier cannot learn from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bneck.core.errors import ConfigError, DatasetError
from bneck.pipeline.data import FeatureSet
from bneck.pipeline.training.classifiers import get_classifier
from bneck.pipeline.training.options import CLASSIFIERS


def validate_classifiers(classifiers: Sequence[str]) -> list[str]:
    """Check classifier names; returns them. Raises ConfigError."""
    if isinstance(classifiers, str):
        classifiers = classifiers.split(",")
    names = [c.strip() for c in classifiers if c.strip()]
    if not names:
        raise ConfigError(f"--classifier needs at least one of {', '.join(CLASSIFIERS)}. Received: none.")
    for name in names:
        get_classifier(name)  # ConfigError, with the closest registered name
    if len(set(names)) != len(names):
        raise ConfigError(f"--classifier names each classifier once. Received: {','.join(names)}.")
    return names


def check_held_out(fs: FeatureSet) -> None:
    """Refuse validation or test splits made of training images (a features folder whose files are
    copies of train.h5 reported 100 % test); flag, as a BneckWarning, a few images they share."""
    import warnings

    from bneck.core.errors import BneckWarning

    _warn_contradictions(fs)
    trained_on = set(fs.attrs["train"]["sha256"])
    for split in ("validation", "test"):
        if split not in fs.attrs:
            continue
        shas, paths = fs.attrs[split]["sha256"], fs.attrs[split]["paths"]
        shared = [i for i, sha in enumerate(shas) if sha in trained_on]
        if not shared:
            continue
        said = (
            f"{len(shared)} of the {len(shas)} images of {split}.h5 in {fs.folder} are training images too "
            f"(same bytes; first: {paths[shared[0]]!r}), so its accuracy is not measured on unseen images"
        )
        if 10 * len(shared) >= len(shas):
            raise DatasetError(
                f"{said}. Extract from a data folder whose splits hold different images (`bneck extract` "
                "keeps each image in one split when it makes them from one folder). Nothing was trained."
            )
        warnings.warn(f"{said}: remove them from {split}/ for an honest figure.", BneckWarning, stacklevel=3)


def _warn_contradictions(fs: FeatureSet) -> None:
    """Flag training images whose very bytes are also filed under another class (a BneckWarning)."""
    import warnings

    from bneck.core.errors import BneckWarning

    first: dict[str, tuple[int, str]] = {}
    clashes = []
    for sha, label, path in zip(fs.attrs["train"]["sha256"], fs.labels("train"), fs.attrs["train"]["paths"]):
        seen = first.setdefault(sha, (int(label), path))
        if seen[0] != int(label):
            clashes.append((seen[1], path))
    if clashes:
        warnings.warn(
            f"{len(clashes)} training image(s) of {fs.folder} are the same bytes as an image of another class "
            f"(first: {clashes[0][0]!r} and {clashes[0][1]!r}): the model is taught both answers for one "
            "picture. Keep each in its right class folder.",
            BneckWarning,
            stacklevel=3,
        )


def check_data(fs: FeatureSet, per_classifier: dict[str, dict]) -> None:
    """Refuse, before any fit, what these features cannot support (``check_held_out``, ``check_counts``)."""
    check_held_out(fs)
    shape = fs.feature_shape
    for name, cfg in per_classifier.items():
        width = shape[-1] if cfg.get("reshape", "avg") != "flatten" else int(np.prod(shape))
        check_counts(name, cfg, fs.class_names, fs.labels("train"), fs.labels("validation"), fs.folder, width)


def check_counts(
    name: str,
    cfg: dict,
    class_names: Sequence[str],
    train_labels,
    validation_labels,
    where: str,
    width: int | None = None,
) -> None:
    """Refuse what the data cannot support for classifier ``name`` with options ``cfg``: one class,
    a class without training images, too few images per class for its internal cross-validation,
    more PCA components than training images (or features, given ``width``), more folds than the
    smallest class has images, a --search of a classifier without a grid. Raises DatasetError or ConfigError."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(class_names))
    if len(class_names) < 2:
        raise DatasetError(
            f"{where} holds one class ({class_names[0]!r}); a classifier needs at least two. Add a class folder."
        )
    if (counts == 0).any():
        missing = [c for c, n in zip(class_names, counts) if n == 0]
        raise DatasetError(
            f"the training split of {where} has no image of class(es) {', '.join(missing)}; "
            "every class needs training images."
        )
    entry = get_classifier(name)
    if entry.kind == "keras":
        return
    if counts.min() < entry.min_per_class:
        raise DatasetError(
            f"{name} calibrates its scores by cross-validation and needs at least "
            f"{entry.min_per_class} training images of every class; the smallest class of "
            f"{where} has {counts.min()}. Add images or choose another classifier."
        )
    if cfg["search"] and not entry.grid:
        raise ConfigError(
            f"--search tunes a classifier's grid of candidates, and {name} registers none. "
            f"Received: search={cfg['search']!r} for {name}; train it without --search."
        )
    pca = cfg["pca"]
    if isinstance(pca, int):
        limit = min(len(train_labels), width) if width else len(train_labels)
        if pca > limit:
            raise ConfigError(
                f"--pca {pca} asks for more components than the {len(train_labels)} training "
                f"images{f' and {width} features' if width else ''} allow: at most {limit}. "
                f"Give a smaller --pca, or a fraction of the variance such as 0.95."
            )
    if cfg["search"] == "kfold":
        both = np.concatenate([train_labels, validation_labels]).astype(np.int64)
        smallest = int(np.bincount(both, minlength=len(class_names)).min())
        if cfg["folds"] > smallest:
            raise ConfigError(
                f"--folds {cfg['folds']} is more than the {smallest} image(s) of the smallest "
                f"class in train+validation; use --folds {max(2, smallest)} or fewer."
            )
