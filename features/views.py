"""Stage 3's cached frozen part: the last frozen layer's output for K views of each image.

View 0 is the image itself, and its rows are exactly stage 1's rows for the base cut
at that layer (same key): ``bneck extract --layer block4_pool --pool none`` and
``bneck finetune --cache-frozen`` share them. Views 1..K-1 are augmented; the
augmentation, its seed and the view index enter the key (``ExtractorSpec.augmentation``)
and each view is a pure function of the image's content (``augment.view_transforms``),
so a view computed once is reused by any later run, in any order or batch size.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Optional, Sequence

import numpy as np

from .augment import view_transforms, warp
from .cache import MissingRows, RowCache, missing_shas
from .key import ExtractorSpec
from .progress import progress_bar
from .tfimport import import_tensorflow

# How a view is made from its transform; enters the key of augmented views.
WARP = "affine:bilinear:fill-nearest:after-preprocessing"


def view_spec(spec: ExtractorSpec, layer: str, pool: str, params: dict, seed: int,
              view: int) -> ExtractorSpec:
    """Return the spec of view ``view`` of ``spec``'s base cut at ``layer`` (pooled by ``pool``)."""
    augmentation = None
    if view:
        augmentation = json.dumps({"params": params, "seed": seed, "view": view, "warp": WARP},
                                  sort_keys=True)
    return dataclasses.replace(spec, layer=layer, pool=pool, dtype="float32",
                               augmentation=augmentation)


@dataclasses.dataclass
class ViewStats:
    """What building the views cost: rows computed by the trunk, rows reused, seconds."""

    computed: int = 0
    reused: int = 0
    seconds: float = 0.0


class TrunkViews:
    """Computes and caches trunk outputs of (augmented) views of in-memory uint8 images."""

    def __init__(self, trunk, preprocess, spec: ExtractorSpec, layer: str, pool: str,
                 params: dict, seed: int, cache_dir: str, batch_size: int = 32,
                 verbose: bool = True):
        tf = import_tensorflow()
        self.spec, self.layer, self.pool = spec, layer, pool
        self.params, self.seed, self.cache_dir = params, seed, cache_dir
        self.batch_size, self.verbose = batch_size, verbose
        self.stats = ViewStats()
        size = spec.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8),
                                      tf.TensorSpec([None, 8], tf.float32), tf.TensorSpec([], tf.bool)])
        def forward(images, transforms, augmented):
            x = preprocess(tf.cast(images, tf.float32))
            x = tf.cond(augmented, lambda: warp(tf, x, transforms), lambda: x)
            return trunk(x, training=False)

        self._forward = forward

    def rows(self, images: np.ndarray, shas: Sequence[str], views: Sequence[int],
             label: str = "") -> np.ndarray:
        """Return float32 rows for every view in ``views`` of ``images``, view-major.

        Row ``j * len(images) + i`` is view ``views[j]`` of image ``i``. Rows already in
        the cache are read, the others computed and committed first.
        """
        start = time.perf_counter()
        n = len(images)
        out: Optional[np.ndarray] = None
        for j, view in enumerate(views):
            cache = RowCache(self.cache_dir, view_spec(self.spec, self.layer, self.pool,
                                                       self.params, self.seed, view))
            cache.refresh()
            todo = missing_shas(cache, dict.fromkeys(shas))
            self._compute(cache, images, shas, todo, view, f"{label} view {view}".strip())
            self.stats.reused += n - len(todo)
            for attempt in range(4):
                try:
                    if out is None:
                        shape, _ = cache.row_layout(shas[0])
                        out = np.empty((len(views) * n,) + shape, np.float32)
                    block = out[j * n:(j + 1) * n]

                    def sink(first, part, block=block):
                        block[first:first + len(part)] = part

                    cache.read_rows(list(shas), sink)
                    break
                except MissingRows as exc:  # `bneck cache gc` removed them meanwhile: make them again
                    if attempt == 3:
                        raise
                    self._compute(cache, images, shas, exc.shas, view, f"{label} view {view}".strip())
        self.stats.seconds += time.perf_counter() - start
        return out

    def compute(self, batch: np.ndarray, shas: Sequence[str], view: int) -> np.ndarray:
        """Return the trunk's rows for view ``view`` of a uint8 ``batch`` of images with these ``shas``."""
        size = self.spec.input_size
        transforms = view_transforms(list(shas), view, self.seed, self.params, size, size)
        return self._forward(batch, transforms, view != 0).numpy()

    def _compute(self, cache: RowCache, images, shas, todo, view: int, label: str) -> None:
        if not todo:
            return
        first = {}
        for i, sha in enumerate(shas):
            first.setdefault(sha, i)
        bar = progress_bar(len(todo), f"{label}: computing", self.verbose)
        pending_shas, pending_rows = [], []
        try:
            for lo in range(0, len(todo), self.batch_size):
                part = todo[lo:lo + self.batch_size]
                pending_rows.append(self.compute(images[[first[s] for s in part]], part, view))
                pending_shas.extend(part)
                self.stats.computed += len(part)
                if len(pending_shas) >= 1024:
                    cache.commit(pending_shas, np.concatenate(pending_rows))
                    pending_shas, pending_rows = [], []
                bar.update(len(part))
        finally:
            if pending_shas:  # also on Ctrl-C: nothing computed is thrown away
                cache.commit(pending_shas, np.concatenate(pending_rows))
            bar.close()
