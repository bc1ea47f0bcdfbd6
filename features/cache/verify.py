"""``bneck cache verify``: every chunk read in full against its checksums (``verify_cache``), and with
``--recompute N`` a seeded sample of stored rows recomputed and compared (``recompute_sample``).

Checksums prove a chunk is what its writer wrote; they cannot prove the writer
computed it honestly (anyone who may write to a shared cache can commit a forged
chunk with matching checksums). Recomputing is the check that can: for each cache
entry, N rows whose images are found under the given data folders (by sha256) are
computed again with the reference runtime, TensorFlow in fp32 (an augmented view
with its recorded transform; int8 rows with the cached int8 model), and compared
with the stored rows within ``equivalence.TOLERANCE`` (for views stored rounded, once each value's
rounding is set aside: ``beyond_rounding``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bneck.core.errors import BneckError
from bneck.core.hashing import sha256_files
from bneck.features.backbones.model_file import backbone_for
from bneck.features.backbones.resolve import spec_from_record
from bneck.features.cache.maintenance import CacheEntry, list_entries
from bneck.features.cache.rows import CorruptChunk, RowCache, chunk_files, read_rows_file
from bneck.features.featurefile.storage import is_rounded, rounding_error
from bneck.features.images.batches import decoded_batches
from bneck.features.images.dataset import is_image_name, is_visible
from bneck.features.runtimes.equivalence import TOLERANCE, relative_differences


def verify_cache(cache_dir: str) -> tuple[int, list[tuple[str, str]]]:
    """Read every chunk of every entry in full; returns (chunks checked, [(path, problem)])."""
    checked, problems = 0, []
    for entry in list_entries(cache_dir):
        if entry.meta.get("extractor_key") != entry.key:
            problems.append((os.path.join(entry.folder, "meta.json"), "damaged, or not this entry's key"))
        for path in chunk_files(entry.folder):
            checked += 1
            _, problem = read_rows_file(path, entry.key, entry.meta.get("dtype"))
            if problem:
                problems.append((path, problem))
    return checked, problems


@dataclass
class RecomputeCheck:
    """The outcome for one cache entry: rows compared, the worst difference, the rows that differ."""

    key: str
    description: str
    checked: int = 0
    worst: float = 0.0
    differing: list[str] = field(default_factory=list)  # image sha256s whose stored row is wrong
    skipped: str | None = None  # why the entry could not be checked


def images_under(folders: Sequence[str], workers: int = 0) -> dict[str, str]:
    """Return {sha256: path} of every image file under ``folders`` (hidden names skipped)."""
    paths = []
    for folder in folders:
        for current, dirs, files in os.walk(os.path.abspath(os.path.expanduser(folder))):
            dirs[:] = sorted(d for d in dirs if is_visible(d))
            paths += [os.path.join(current, n) for n in sorted(files) if is_image_name(n)]
    return {sha: path for path, (sha, _) in zip(paths, sha256_files(paths, workers)) if sha}


def _reference(spec, cache_dir: str, sample, trunks: dict):
    """Return rows(uint8 batch, shas) -> features, computed the reference way for ``spec``. Views share
    one trunk per extractor, layer, augmentation and seed through ``trunks`` (built once, traced once)."""
    backbone = backbone_for(spec)
    if spec.quantization is not None:
        from bneck.features.runtimes.openvino import OpenVINOFeatureModel, converted_path
        from bneck.features.runtimes.quantize import reduced_precision

        precision = reduced_precision(spec)
        needed = (
            converted_path(cache_dir, spec, "int8")
            if precision == "int8"
            else converted_path(cache_dir, dataclasses.replace(spec, quantization=None))
        )
        if not os.path.isfile(needed):
            raise LookupError(f"its {precision} model is not in the cache (CACHE/openvino)")
        try:
            model = OpenVINOFeatureModel(backbone, spec, cache_dir, sample=sample)
        except BneckError as exc:  # never checked by this user here: cannot serve as a reference
            raise LookupError(f"its {precision} model cannot be used here ({str(exc)[:160]})") from None
        return lambda batch, shas: model(batch)
    if spec.augmentation is not None or is_rounded(spec.dtype):  # a fine-tuning view
        from bneck.features.backbones.feature_model import build_base, cut_model
        from bneck.features.views.rows import TrunkViews, parse_view

        params, view_seed, view = parse_view(spec.augmentation)
        base = dataclasses.replace(spec, augmentation=None, dtype="float32")
        shared = (base.key, spec.layer, spec.pool, json.dumps(params, sort_keys=True), view_seed)
        if shared in trunks:
            return lambda batch, shas: trunks[shared].compute(batch, shas, view)
        trunk = cut_model(build_base(backbone, base), backbone, spec.layer, spec.pool)
        views = trunks[shared] = TrunkViews(
            trunk,
            backbone.preprocess_fn(),
            base,
            spec.layer,
            spec.pool,
            params,
            view_seed,
            cache_dir,
            verbose=False,
            precision=spec.dtype,
        )
        return lambda batch, shas: views.compute(batch, shas, view)
    from bneck.features.backbones.feature_model import FeatureModel

    model = FeatureModel(backbone, spec)
    return lambda batch, shas: model(batch)


def _check_entry(
    entry: CacheEntry, images: dict, n: int, seed: int, tolerance: float, cache_dir: str, trunks: dict
) -> RecomputeCheck:
    meta = entry.meta
    check = RecomputeCheck(
        entry.key,
        f"{meta.get('backbone')} layer={meta.get('layer')} pool={meta.get('pool')} dtype={meta.get('dtype')}"
        f"{' augmented view' if meta.get('augmentation') else ' view 0' if is_rounded(meta.get('dtype')) else ''}"
        f"{' int8' if meta.get('quantization') else ''}",
    )
    try:
        spec = spec_from_record(meta, entry.key, [meta.get("weights_path")], where=f"{entry.folder}/meta.json")
    except (BneckError, KeyError, TypeError) as exc:
        check.skipped = f"its extractor cannot be rebuilt ({str(exc)[:160]})"
        return check
    cache = RowCache(cache_dir, spec)
    cache.refresh()
    present = sorted(sha for sha in images if sha in cache)
    if not present:
        check.skipped = "none of its rows come from images under the given folders"
        return check
    sample = sorted(np.random.default_rng(seed).choice(present, min(n, len(present)), replace=False))
    stored: list = []
    try:
        cache.read_rows(sample, lambda _, block: stored.append(block))
    except CorruptChunk as exc:
        check.skipped = f"a chunk of it is damaged ({os.path.basename(str(exc))}): `bneck cache gc` drops it"
        return check
    batches = [
        (shas, batch)
        for shas, batch, _ in decoded_batches([(sha, images[sha]) for sha in sample], spec.input_size, 32)
        if shas
    ]
    try:
        compute = _reference(spec, cache_dir, lambda: np.concatenate([b for _, b in batches])[:8], trunks)
    except LookupError as exc:
        check.skipped = str(exc)
        return check
    fresh, kept = [], []
    for shas, batch in batches:
        fresh.append(compute(batch, shas))
        kept += shas
    stored = np.concatenate(stored)[[sample.index(s) for s in kept]]
    diffs = beyond_rounding(np.concatenate(fresh), stored, spec.dtype) if kept else np.zeros(0)
    check.checked, check.worst = len(kept), float(diffs.max(initial=0.0))
    check.differing = [sha for sha, d in zip(kept, diffs) if d > tolerance]
    return check


def beyond_rounding(fresh: np.ndarray, stored: np.ndarray, dtype: str) -> np.ndarray:
    """Per row, what ``relative_differences`` measures once each value's rounding to ``dtype`` is set aside:
    a stored value may differ from the fresh one by ``rounding_error(dtype)`` of it, and only by more
    than that does the difference count (exactly ``relative_differences`` for rows stored as computed)."""
    error = rounding_error(dtype)
    if not error:
        return relative_differences(fresh, stored)
    a, b = np.asarray(fresh, np.float64), np.asarray(stored, np.float64)
    excess = np.maximum(np.abs(a - b) - error * np.abs(a), 0.0)  # NaN stays NaN: infinitely different
    return relative_differences(b + np.sign(a - b) * excess, b)


def recompute_sample(
    cache_dir: str, data_dirs: Sequence[str], n: int, seed: int = 0, tolerance: float = TOLERANCE, workers: int = 0
) -> list[RecomputeCheck]:
    """Recompute up to ``n`` seeded rows of every cache entry whose images are under ``data_dirs``."""
    images = images_under(data_dirs, workers)
    trunks: dict = {}  # the fine-tuning views' trunks, one per extractor, layer, augmentation and seed
    return [_check_entry(entry, images, n, seed, tolerance, cache_dir, trunks) for entry in list_entries(cache_dir)]
