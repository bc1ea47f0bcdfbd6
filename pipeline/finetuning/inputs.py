"""What stage 3 trains on: the recorded images of each split, and the model and tensors a path feeds.

Images are decoded exactly as in stage 1 (Pillow bilinear). The fast path
(``cache_frozen``, the default) runs the frozen part once per image and view into the
feature cache (``bneck.features.views.rows``), decoding only images whose rows the cache
lacks, a batch at a time, and trains only the unfrozen top on those rows, read from a
file a block at a time (``rowfile``): its memory does not grow with the number of
images. The plain path holds every decoded image in memory and feeds them per epoch
through the backbone's own preprocessing, the augmentation (training batches only)
and the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bneck.features.images.batches import decoded_batches


@dataclass
class RecordedImages:
    """One split's recorded images as (ImageRecord, sha256) pairs: labels, paths and hashes."""

    records: list

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([r.label for r, _ in self.records], np.int64)

    @property
    def paths(self) -> list[str]:
        return [r.path for r, _ in self.records]

    @property
    def shas(self) -> list[str]:
        return [sha for _, sha in self.records]


@dataclass
class SplitImages(RecordedImages):
    """A split decoded on demand, never all at once (the cached path)."""

    size: int = 224

    @property
    def skipped(self) -> list:
        return []  # a recorded image that does not decode is an error (``decode``), never skipped

    def decode(self, indices) -> np.ndarray:
        """Return the images at ``indices`` as a uint8 batch, decoded in parallel.

        Raises DatasetError when one no longer decodes to its recorded bytes (it was
        checked by sha256 moments before: the file changed during the fine-tune).
        """
        from bneck.core.errors import DatasetError

        picked = [self.records[i] for i in indices]
        out = np.empty((len(picked), self.size, self.size, 3), np.uint8)
        n = 0
        for keys, batch, failures in decoded_batches(
            [(sha, r.abspath) for r, sha in picked], self.size, max(1, len(picked)), keys_are_sha256=True
        ):
            if failures:
                path = next(r.path for r, sha in picked if sha == failures[0][0])
                raise DatasetError(
                    f"{path} changed or became unreadable during the fine-tune "
                    f"({failures[0][1]}); nothing was saved. Run the fine-tune again."
                )
            out[n : n + len(keys)] = batch
            n += len(keys)
        return out


@dataclass
class DecodedSplit(RecordedImages):
    """A split decoded into memory (the plain path): the images kept and the files skipped."""

    images: np.ndarray = None
    skipped: list = None  # (path, reason)


def decode_split(records, size: int) -> DecodedSplit:
    """Decode a split's (ImageRecord, sha256) pairs at ``size`` px; the whole split is held in
    memory (2,000 images at 224 px: 300 MB)."""
    images = np.empty((len(records), size, size, 3), np.uint8)
    skipped, n, kept = [], 0, []
    by_path = {r.path: (r, sha) for r, sha in records}
    for paths, batch, failures in decoded_batches([(r.path, r.abspath) for r, _ in records], size, 64):
        skipped.extend(failures)
        images[n : n + len(paths)] = batch
        kept.extend(by_path[p] for p in paths)
        n += len(paths)
    return DecodedSplit(kept, images=images[:n], skipped=skipped)


@dataclass
class TrainInputs:
    """What one path trains on: a model, per-split inputs it takes, and how to prepare them."""

    model: object
    x: dict  # split -> rows (train: views * n rows, view-major)
    prepare: object  # in-graph batch -> model input
    views: int
    eval_batch: int
    augment: object = None  # training batches only
    cache: dict | None = None  # trunk rows computed / reused, seconds
    mirrored: dict | None = None  # split -> inputs of the mirrored images (test-time augmentation)
    # The cached path: (split, mirrored) -> the whole model's outputs on the split's images and, when
    # ``mirrored``, on their mirror images: what a folder records for validation and test
    # (``scored_on_images``); training images are scored on their cached rows.
    whole: object = None
    whole_mirrored: dict = field(default_factory=dict)  # split -> outputs ``whole`` gave on the mirrors


def plain_inputs(tf, ft, data: dict[str, DecodedSplit], preprocess, tta: bool = False) -> TrainInputs:
    """The whole model on preprocessed images, augmented per training batch; with ``tta`` the
    mirrored validation and test images too (views of the same memory, not copies)."""
    layer = ft.augmentation
    augment = None if layer is None else (lambda batch: layer(batch, training=True))
    mirrored = {s: d.images[:, :, ::-1] for s, d in data.items() if s != "train"} if tta else None
    return TrainInputs(
        ft.model,
        {s: d.images for s, d in data.items()},
        lambda b: preprocess(tf.cast(b, tf.float32)),
        1,
        32,
        augment,
        mirrored=mirrored,
    )


def cached_inputs(
    tf,
    ft,
    data: dict[str, SplitImages],
    preprocess,
    augment: dict,
    views: int,
    seed: int,
    cache_dir: str,
    rows_folder,
    verbose: bool,
    tta: bool = False,
    precision: str = "float32",
) -> TrainInputs:
    """The unfrozen top on the cached output of the frozen trunk, ``views`` views per training image;
    with ``tta`` the cached mirror view of validation and test images too. The rows go to
    RowFiles in ``rows_folder`` (``rowfile.RowFolder``), a block at a time."""
    from bneck.features.views.rows import TrunkViews
    from bneck.pipeline.finetuning.model import frozen_split

    split = frozen_split(ft)
    where = (ft.spec, split.layer, split.pool, augment, seed, cache_dir)
    trunk = TrunkViews(split.trunk, preprocess, *where, verbose=verbose, precision=precision)

    x, mirrored = _row_files(trunk, data, views, tta, rows_folder)
    stats = trunk.stats
    return TrainInputs(
        split.top,
        x,
        lambda b: tf.cast(b, tf.float32),
        views,
        256,
        cache={
            "layer": split.layer,
            "views": views,
            "precision": precision,
            "rows_computed": stats.computed,
            "rows_reused": stats.reused,
            "seconds": stats.seconds,
        },
        mirrored=mirrored,
        whole=scored_on_images(tf, ft.model, preprocess, data) if precision != "float32" else None,
    )


def _row_files(trunk, data: dict, views: int, tta: bool, rows_folder) -> tuple[dict, dict | None]:
    """Ensure every split's views are cached, then copy them into RowFiles: (split -> rows, split ->
    mirrored rows or None). Training images get ``views`` views, the others view 0 (and the mirror)."""
    from bneck.features.views.warp import FLIP_VIEW

    def row_file(name: str, images: SplitImages, which: list):
        n = len(images.shas)
        shape = trunk.row_shape(images.decode, images.shas, which[0])
        rows = rows_folder.new(name.replace(" ", "-"), n * len(which), shape, trunk.precision)
        for j, view in enumerate(which):
            trunk.read(images.decode, images.shas, view, lambda first, block, j=j: rows.write(j * n + first, block))
        return rows

    x, mirrored = {}, ({} if tta else None)
    for s, d in data.items():
        which = list(range(views)) if s == "train" else [0]
        trunk.ensure(d.decode, d.shas, which + ([FLIP_VIEW] if tta and s != "train" else []), s)
        x[s] = row_file(s, d, which)
        if tta and s != "train":
            mirrored[s] = row_file(f"{s} mirrored", d, [FLIP_VIEW])
    return x, mirrored


def scored_on_images(tf, model, preprocess, data: dict, batch: int = 64):
    """Return (split, mirrored) -> (``model``'s outputs on the split's images, on their mirror images or
    None), decoding a batch at a time. The cached rows the top trains on are rounded to bfloat16
    (``featurefile.storage``); what a fine-tuned folder records for validation and test (the
    splits every score, comparison and selection reads) is the saved model in float32 on the
    images, as `bneck predict` runs it."""
    call = tf.function(lambda b: model(preprocess(tf.cast(b, tf.float32)), training=False), reduce_retracing=True)

    def outputs(split: str, mirrored: bool) -> tuple:
        images, plain, mirror = data[split], [], []
        n = len(images.shas)
        for lo in range(0, n, batch):
            decoded = images.decode(range(lo, min(n, lo + batch)))
            plain.append(call(tf.constant(decoded)).numpy())
            if mirrored:
                mirror.append(call(tf.constant(np.ascontiguousarray(decoded[:, :, ::-1]))).numpy())
        return np.concatenate(plain), (np.concatenate(mirror) if mirrored else None)

    return outputs


def predictor(tf, inputs: TrainInputs):
    """Return (x, rows=None) -> the model's outputs on the first ``rows`` rows of ``x`` (all by default),
    read and run batch by batch (bounded memory and activations; ``x`` may be a RowFile), traced once."""
    model, prepare, batch_size = inputs.model, inputs.prepare, inputs.eval_batch
    call = tf.function(lambda b: model(prepare(b), training=False), reduce_retracing=True)

    def predict(x, rows=None) -> np.ndarray:
        n = len(x) if rows is None else rows
        return np.concatenate(
            [
                call(tf.constant(np.ascontiguousarray(x[i : min(i + batch_size, n)]))).numpy()
                for i in range(0, n, batch_size)
            ]
        )

    return predict
