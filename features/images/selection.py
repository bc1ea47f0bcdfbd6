"""Which images of a dataset an extraction reads, and for what: every split hashed (unreadable
files quarantined), images whose bytes appear in two splits, the training images a
runtime is checked on and int8 calibrates on."""

from __future__ import annotations

import numpy as np

from bneck.core.errors import BneckError, ConfigError
from bneck.core.hashing import sha256_files
from bneck.features.images.dataset import Dataset, discover


def hash_split(dataset: Dataset, split: str, workers: int) -> tuple[list, list]:
    """Return (usable (record, sha256) pairs, quarantine) of a split; unreadable files are quarantined."""
    records = dataset.splits[split]
    quarantine = list(dataset.quarantine.get(split, []))
    usable = []
    for record, (sha, problem) in zip(records, sha256_files([r.abspath for r in records], workers)):
        if sha is None:
            quarantine.append((record.path, problem))
        else:
            usable.append((record, sha))
    return usable, quarantine


def cross_split_duplicates(usable: dict[str, list]) -> list[dict]:
    """Return the images whose bytes appear in more than one split: [{sha256, paths: {split: [...]}}].

    They make validation and test accuracy look better than they are.
    """
    where: dict[str, dict[str, list[str]]] = {}
    for split, pairs in usable.items():
        for record, sha in pairs:
            where.setdefault(sha, {}).setdefault(split, []).append(record.path)
    return [{"sha256": sha, "paths": paths} for sha, paths in sorted(where.items()) if len(paths) > 1]


CHECK_IMAGES = 8


def check_sample(records: list, seed: int) -> list[str]:
    """Return up to ``CHECK_IMAGES`` image paths, a seeded sample of ``records`` (the training
    split's), on which a runtime is compared with the reference before it makes rows."""
    records = sorted(records, key=lambda r: r.path)
    order = np.random.default_rng(seed).permutation(len(records))[:CHECK_IMAGES]
    return [records[i].abspath for i in sorted(order)]


def training_records(dataset: Dataset, data_dir, split, seed, exclude, follow_links, required=True):
    """Return the training split's records (found even when --splits leaves train out); without
    one, the first split's unless ``required``."""
    original = dataset
    if "train" not in dataset.splits:
        try:
            dataset = discover(
                data_dir, splits=["train"], split=split, seed=seed, exclude=exclude, follow_links=follow_links
            )
        except BneckError:
            dataset = None
    if (dataset is None or "train" not in dataset.splits) and not required:
        return next(iter(original.splits.values()))
    if dataset is None or "train" not in dataset.splits:
        raise ConfigError(
            f"--precision int8 and bf16 are checked (and int8 calibrated) on the training split, "
            f"but {data_dir} has none. Add a train/ folder, or use --precision fp32."
        )
    return dataset.splits["train"]
