"""Rows of augmented views: a cut base's output for K views of each image, cached like features.

Stage 3 uses them for its frozen part (``--cache-frozen``), and ``cache verify``
recomputes them like any other rows, which is why they live in stage 1's package.

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
from .cache import RowCache, RowWriter, missing_shas, remaking_missing
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
            name = f"{label} view {view}".strip()
            self._compute(cache, images, shas, todo, view, name)
            self.stats.reused += n - len(todo)

            # `bneck cache gc` may remove rows meanwhile: they are made again, and read again.
            def remake(missing, cache=cache, view=view, name=name):
                self._compute(cache, images, shas, missing, view, name)

            if out is None:
                shape = remaking_missing(lambda: cache.row_layout(shas[0])[0], remake)
                out = np.empty((len(views) * n,) + shape, np.float32)
            remaking_missing(lambda: cache.read_rows(list(shas), _into(out[j * n:(j + 1) * n])), remake)
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
        try:
            with RowWriter(cache, rows=1024, seconds=float("inf")) as rows:
                for lo in range(0, len(todo), self.batch_size):
                    part = todo[lo:lo + self.batch_size]
                    rows.add(part, self.compute(images[[first[s] for s in part]], part, view))
                    self.stats.computed += len(part)
                    bar.update(len(part))
        finally:
            bar.close()


def _into(block: np.ndarray):
    """Return a ``read_rows`` sink that fills ``block``."""
    def sink(first: int, rows: np.ndarray) -> None:
        block[first:first + len(rows)] = rows
    return sink
