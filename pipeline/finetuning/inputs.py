"""What stage 3 trains on: the decoded images of each split, and the model and tensors a path feeds.

Images are decoded once (Pillow bilinear, exactly as in stage 1) into memory. The
plain path feeds them per epoch through the backbone's own preprocessing, the
augmentation (training batches only) and the whole model. The fast path
(``cache_frozen``) runs the frozen part once per image and view into the feature
cache (``features.view_rows``) and trains only the unfrozen top on those tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from features.batches import decoded_batches


@dataclass
class DecodedSplit:
    """One split in memory: uint8 images, labels, the (record, sha256) pairs kept, the files skipped."""

    images: np.ndarray
    labels: np.ndarray
    kept: list
    skipped: list  # (path, reason)

    @property
    def paths(self) -> list[str]:
        return [r.path for r, _ in self.kept]

    @property
    def shas(self) -> list[str]:
        return [sha for _, sha in self.kept]


def decode_split(records, size: int) -> DecodedSplit:
    """Decode a split's (ImageRecord, sha256) pairs at ``size`` px; the whole split is held in
    memory (2,000 images at 224 px: 300 MB)."""
    images = np.empty((len(records), size, size, 3), np.uint8)
    skipped, n, kept = [], 0, []
    by_path = {r.path: (r, sha) for r, sha in records}
    for paths, batch, failures in decoded_batches([(r.path, r.abspath) for r, _ in records], size, 64):
        skipped.extend(failures)
        images[n:n + len(paths)] = batch
        kept.extend(by_path[p] for p in paths)
        n += len(paths)
    return DecodedSplit(images[:n], np.asarray([r.label for r, _ in kept], np.int64), kept, skipped)


@dataclass
class TrainInputs:
    """What one path trains on: a model, per-split inputs it takes, and how to prepare them."""

    model: object
    x: dict          # split -> rows (train: views * n rows, view-major)
    prepare: object  # in-graph batch -> model input
    views: int
    eval_batch: int
    augment: object = None  # training batches only
    cache: Optional[dict] = None  # trunk rows computed / reused, seconds


def plain_inputs(tf, ft, data: dict[str, DecodedSplit], preprocess) -> TrainInputs:
    """The whole model on preprocessed images, augmented per training batch."""
    layer = ft.augmentation
    augment = None if layer is None else (lambda batch: layer(batch, training=True))
    return TrainInputs(ft.model, {s: d.images for s, d in data.items()},
                       lambda b: preprocess(tf.cast(b, tf.float32)), 1, 32, augment)


def cached_inputs(tf, ft, data: dict[str, DecodedSplit], preprocess, augment: dict, views: int, seed: int,
                  cache_dir: str, verbose: bool) -> TrainInputs:
    """The unfrozen top on the cached output of the frozen trunk, ``views`` views per training image."""
    from features.view_rows import TrunkViews

    from .model import frozen_split

    split = frozen_split(ft)
    trunk = TrunkViews(split.trunk, preprocess, ft.spec, split.layer, split.pool, augment, seed,
                       cache_dir, verbose=verbose)
    x = {s: trunk.rows(d.images, d.shas, range(views) if s == "train" else [0], s) for s, d in data.items()}
    stats = trunk.stats
    return TrainInputs(split.top, x, lambda b: tf.cast(b, tf.float32), views, 256,
                       cache={"layer": split.layer, "views": views, "rows_computed": stats.computed,
                              "rows_reused": stats.reused, "seconds": stats.seconds})


def predictor(tf, inputs: TrainInputs):
    """Return x -> the model's outputs, batch by batch (bounded activations), traced once."""
    model, prepare, batch_size = inputs.model, inputs.prepare, inputs.eval_batch
    call = tf.function(lambda b: model(prepare(b), training=False), reduce_retracing=True)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([call(tf.constant(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])
    return predict
