"""Rows of augmented views: a cut base's output for K views of each image, cached like features.

Stage 3 uses them for its frozen part (``--cache-frozen``), and ``cache verify``
recomputes them like any other rows, which is why they live in stage 1's package.

View 0 is the image itself, and its rows are exactly stage 1's rows for the base cut
at that layer (same key): ``bneck extract --layer block4_pool --pool none`` and
``bneck finetune --cache-frozen`` share them. With ``--view-precision bfloat16`` (or ``e8m5``)
every view is stored rounded instead (``dtype = "bfloat16"`` in the key, view 0 included;
``featurefile.storage``: 0.37 of the disk, e8m5 0.31). Views 1..K-1 are augmented; the
augmentation, its seed and the view index enter the key (``ExtractorSpec.augmentation``)
and each view is a pure function of the image's content (``augment.view_transforms``),
so a view computed once is reused by any later run, in any order or batch size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Sequence

import numpy as np

from bneck.core.progress import progress_bar
from bneck.core.tfimport import import_tensorflow
from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.cache.rows import (
    CorruptChunk,
    RowCache,
    RowWriter,
    damaged_chunk_error,
    missing_shas,
    remaking_missing,
)
from bneck.features.featurefile.storage import BFLOAT16, E8M5
from bneck.features.views.warp import FLIP_VIEW, view_transforms, warp

# What views may be stored at: float32 (exact, the default: view 0 shares stage 1's rows at that
# layer), bfloat16 (0.37 of the disk) or e8m5 (bfloat16's exponent, 6 significant bits: 0.31).
VIEW_PRECISIONS = ("float32", BFLOAT16, E8M5)

# How a view is made from its transform; enters the key of augmented views.
WARP = "affine:bilinear:fill-nearest:after-preprocessing"


def view_spec(
    spec: ExtractorSpec, layer: str, pool: str, params: dict, seed: int, view: int, precision: str = "float32"
) -> ExtractorSpec:
    """Return the spec of view ``view`` of ``spec``'s base cut at ``layer`` (pooled by ``pool``), its
    rows stored at ``precision`` (``VIEW_PRECISIONS``).

    The mirror view (``FLIP_VIEW``) depends on neither the augmentation nor the seed."""
    augmentation = None
    if view == FLIP_VIEW:
        augmentation = json.dumps({"view": "horizontal-flip", "warp": WARP}, sort_keys=True)
    elif view:
        augmentation = json.dumps({"params": params, "seed": seed, "view": view, "warp": WARP}, sort_keys=True)
    return dataclasses.replace(spec, layer=layer, pool=pool, dtype=precision, augmentation=augmentation)


def parse_view(augmentation: str | None) -> tuple[dict, int, int]:
    """Return (params, seed, view) of a view's recorded ``augmentation`` (``view_spec``'s JSON;
    None for view 0, the image itself)."""
    if augmentation is None:
        return {}, 0, 0
    recorded = json.loads(augmentation)
    if recorded.get("view") == "horizontal-flip":
        return {}, 0, FLIP_VIEW
    return recorded["params"], recorded["seed"], recorded["view"]


@dataclasses.dataclass
class ViewStats:
    """What building the views cost: rows computed by the trunk, rows reused, seconds."""

    computed: int = 0
    reused: int = 0
    seconds: float = 0.0


class TrunkViews:
    """Computes and caches trunk outputs of (augmented) views of uint8 images, decoding only the
    images whose rows the cache lacks."""

    def __init__(
        self,
        trunk,
        preprocess,
        spec: ExtractorSpec,
        layer: str,
        pool: str,
        params: dict,
        seed: int,
        cache_dir: str,
        batch_size: int = 32,
        verbose: bool = True,
        precision: str = "float32",
    ):
        tf = import_tensorflow()
        self.spec, self.layer, self.pool, self.precision = spec, layer, pool, precision
        self.params, self.seed, self.cache_dir = params, seed, cache_dir
        self.batch_size, self.verbose = batch_size, verbose
        self.stats = ViewStats()
        size = spec.input_size

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, size, size, 3], tf.uint8),
                tf.TensorSpec([None, 8], tf.float32),
                tf.TensorSpec([], tf.bool),
            ]
        )
        def forward(images, transforms, augmented):
            x = preprocess(tf.cast(images, tf.float32))
            x = tf.cond(augmented, lambda: warp(tf, x, transforms), lambda: x)
            return trunk(x, training=False)

        self._forward = forward

    def rows(self, images: np.ndarray, shas: Sequence[str], views: Sequence[int], label: str = "") -> np.ndarray:
        """Return float32 rows for every view in ``views`` of in-memory ``images``, view-major.

        Row ``j * len(images) + i`` is view ``views[j]`` of image ``i``. Rows already in
        the cache are read, the others computed and committed first. (Stage 3 uses
        ``ensure`` and ``read`` instead, which never hold the images.)
        """

        def decode(indices):
            return images[list(indices)]

        n, out = len(images), None
        self.ensure(decode, shas, views, label)
        for j, view in enumerate(views):
            if out is None:
                out = np.empty((len(views) * n,) + self.row_shape(decode, shas, view), np.float32)
            self.read(decode, shas, view, _into(out[j * n : (j + 1) * n]))
        return out

    def ensure(self, decode, shas: Sequence[str], views: Sequence[int], label: str = "") -> None:
        """Compute and commit the rows of ``views`` that the cache lacks; ``decode(indices)`` returns
        the uint8 images at those positions of ``shas``. Only images that lack a row are decoded,
        each once for all its missing views."""
        start = time.perf_counter()
        caches = {view: self._cache(view) for view in views}
        todo = {view: missing_shas(cache, dict.fromkeys(shas)) for view, cache in caches.items()}
        self._compute(caches, decode, shas, todo, label)
        self.stats.reused += sum(len(shas) - len(t) for t in todo.values())
        self.stats.seconds += time.perf_counter() - start

    def row_shape(self, decode, shas: Sequence[str], view: int) -> tuple:
        """Return the shape of one row of view ``view`` (computing it again if it was removed)."""
        cache = self._cache(view)
        with _damaged_chunks_said():
            return remaking_missing(lambda: cache.row_layout(shas[0])[0], self._remake(cache, decode, shas, view))

    def read(self, decode, shas: Sequence[str], view: int, sink) -> None:
        """Call ``sink(start, rows)`` with the rows of view ``view`` of ``shas``, in order, a block at a
        time. `bneck cache gc` may remove rows meanwhile: they are made again, and read again."""
        start = time.perf_counter()
        cache = self._cache(view)
        with _damaged_chunks_said():
            remaking_missing(lambda: cache.read_rows(list(shas), sink), self._remake(cache, decode, shas, view))
        self.stats.seconds += time.perf_counter() - start

    def _cache(self, view: int) -> RowCache:
        spec = view_spec(self.spec, self.layer, self.pool, self.params, self.seed, view, self.precision)
        cache = RowCache(self.cache_dir, spec)
        cache.refresh()
        return cache

    def _remake(self, cache, decode, shas, view):
        def remake(missing):
            self._compute({view: cache}, decode, shas, {view: missing}, f"view {view}")

        return remake

    def compute(self, batch: np.ndarray, shas: Sequence[str], view: int) -> np.ndarray:
        """Return the trunk's rows for view ``view`` of a uint8 ``batch`` of images with these ``shas``."""
        size = self.spec.input_size
        transforms = view_transforms(list(shas), view, self.seed, self.params, size, size)
        return self._forward(batch, transforms, view != 0).numpy()

    def _compute(self, caches: dict, decode, shas, todo: dict, label: str) -> None:
        """Compute the rows ``todo`` lists per view, decoding each image once for all its views."""
        wanted = list(dict.fromkeys(sha for missing in todo.values() for sha in missing))
        if not wanted:
            return
        first = {}
        for i, sha in enumerate(shas):
            first.setdefault(sha, i)
        lacking = {view: set(missing) for view, missing in todo.items() if missing}
        bar = progress_bar(sum(map(len, lacking.values())), f"{label} views: computing".strip(), self.verbose)
        try:
            with contextlib.ExitStack() as stack:
                writers = {
                    view: stack.enter_context(RowWriter(caches[view], rows=1024, seconds=float("inf")))
                    for view in lacking
                }
                for lo in range(0, len(wanted), self.batch_size):
                    part = wanted[lo : lo + self.batch_size]
                    images = decode([first[s] for s in part])
                    for view, writer in writers.items():
                        pick = [i for i, sha in enumerate(part) if sha in lacking[view]]
                        if pick:
                            some = [part[i] for i in pick]
                            writer.add(some, self.compute(images[pick], some, view))
                            self.stats.computed += len(pick)
                            bar.update(len(pick))
        finally:
            bar.close()


@contextlib.contextmanager
def _damaged_chunks_said():
    """A damaged chunk met while reading views becomes the paragraph extraction gives (FeatureFileError)."""
    try:
        yield
    except CorruptChunk as exc:
        raise damaged_chunk_error(exc) from None


def _into(block: np.ndarray):
    """Return a ``read_rows`` sink that fills ``block``."""

    def sink(first: int, rows: np.ndarray) -> None:
        block[first : first + len(rows)] = rows

    return sink
