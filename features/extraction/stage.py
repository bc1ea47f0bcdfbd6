"""Stage 1: run the conv base once per image content and write one HDF5 file per split.

For each split: hash every image, look the hashes up in the shared cache, run the
network only on images whose content it has never seen with this extractor,
commit those rows to the cache as they are made, then write ``OUT/<split>.h5``
from the cache. A rerun on unchanged images never builds the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence

from bneck.core.errors import BneckError
from bneck.core.folders import MARKER, check_folder, claim_folder, remove_owned
from bneck.core.options import takes_options
from bneck.core.private import releases_claims
from bneck.features.backbones.model_file import backbone_for
from bneck.features.backbones.resolve import resolve_spec
from bneck.features.cache.maintenance import drop_entry
from bneck.features.cache.rows import RowCache, resolve_cache_dir
from bneck.features.extraction.local_engine import extract_split
from bneck.features.extraction.options import DEFAULT_SHARD_SIZE, EXTRACT
from bneck.features.extraction.ray_engine import RayPool, extract_split_sharded, ray_options
from bneck.features.extraction.report import ExtractionReport
from bneck.features.images.dataset import Dataset, discover
from bneck.features.images.selection import check_sample, cross_split_duplicates, hash_split, training_records
from bneck.features.runtimes.choice import choose_runtime
from bneck.features.runtimes.extractor import Extractor
from bneck.features.runtimes.quantize import (
    BF16_METHOD,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MIN_COSINE,
    gate,
    plan_calibration,
)
from bneck.features.runtimes.registry import get_runtime, ready_here


@releases_claims
@takes_options(EXTRACT)
def extract(
    data_dir: str,
    out_dir: str,
    *,
    backbone: str = "vgg16",
    weights: str | None = "imagenet",
    size: int | None = None,
    layer: str | None = None,
    pool: str = "none",
    dtype: str = "float32",
    alpha: float | None = None,
    preprocess: str | None = None,
    splits: Sequence[str] | None = None,
    split=None,
    seed: int = 0,
    exclude: Sequence[str] = (),
    follow_links: bool = False,
    batch_size: int = 32,
    cache_dir: str | None = None,
    keep_cache: bool = True,
    workers: int = 0,
    commit_rows: int = 1024,
    commit_seconds: float = 20.0,
    runtime: str = "auto",
    precision: str = "fp32",
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    min_cosine: float = DEFAULT_MIN_COSINE,
    force: bool = False,
    engine: str = "local",
    address: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_gpus_per_worker: float = 0.0,
    actor_class=None,
    verbose: bool = True,
) -> ExtractionReport:
    """Extract bottleneck features for every split of ``data_dir`` into ``out_dir/<split>.h5``.

    ``runtime`` is a registered runtime (``runtimes.registry``) or ``auto`` (``runtimes.choice``). ``precision="int8"``
    (OpenVINO only) quantises on ``calibration_images`` training images and refuses if the features' cosine to fp32
    falls below ``min_cosine`` on held-back training images, unless ``force``. ``engine="ray"`` runs the network in
    Ray actors (``workers`` of them; 0: one per node) on the cluster at ``address`` (None: start a local one),
    ``shard_size`` images per shard file (see ``ray_engine``); the local engine decodes images on ``workers`` threads.

    Returns an ExtractionReport. Raises ConfigError, DatasetError, WeightsError or FeatureFileError (all
    BneckError) for user mistakes; rows computed before an error or Ctrl-C stay in the cache.
    """
    choice, ray = _engine(runtime, precision, engine, address, workers, shard_size, num_gpus_per_worker, actor_class)
    source = _Source(data_dir, splits, split, seed, list(exclude), follow_links)
    out_dir, cache_dir, dataset = _open_folders(source, out_dir, cache_dir, sharded=ray is not None)
    spec = resolve_spec(backbone, weights, size, layer, pool, dtype, alpha, preprocess)
    spec, plan = _spec_and_plan(spec, source, dataset, precision, calibration_images, workers)
    choice, commits = _runtime_for_data(choice, spec, cache_dir, dataset), (commit_rows, commit_seconds)
    with _claimed(out_dir, data_dir):  # weights that do not load leave no empty --out behind
        actors = RayPool(ray, spec, cache_dir, batch_size, out_dir) if ray is not None else None
        ex = _build_extractor(
            choice, spec, cache_dir, source, dataset, plan, ray, verbose, batch_size, workers, commits
        )
        report = _report_after_quantization_check(ex, spec, choice, plan, out_dir, cache_dir, min_cosine, force)
        _extract_splits(ex, actors, dataset, out_dir, report)
    return _finish(report, ex, plan, keep_cache)


def _drop_cache_copy(cache: RowCache) -> int | None:
    """--no-keep-cache: remove the extractor's cache entry now that the split files hold every row;
    returns the bytes freed, -2 for a cache shared read-only (its writer decides), or None when another
    process uses the entry (kept)."""
    return -2 if cache.read_only else drop_entry(cache.folder)


@contextlib.contextmanager
def _claimed(out_dir: str, data_dir: str):
    """Claim --out for the block; remove it when this extraction created it and is refused before writing
    anything into it."""
    new_folder = not os.path.lexists(out_dir)
    claim_folder(out_dir, "features", inputs=[data_dir])
    try:
        yield
    except BneckError:
        if new_folder and os.listdir(out_dir) == [MARKER]:
            remove_owned(out_dir, "features")
        raise


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where the images come from and how they are split (the options ``discover`` takes)."""

    data_dir: str
    splits: Sequence[str] | None
    split: list | None
    seed: int
    exclude: list
    follow_links: bool


@dataclasses.dataclass(frozen=True)
class _RuntimeChoice:
    """The runtime that computes the rows (``auto`` until the data decides) and why, whether the user asked
    for ``auto`` (an fp32 run may then fall back to another runtime), and the precision and engine it serves."""

    name: str
    why: str
    auto: bool
    precision: str
    engine: str


def _engine(runtime, precision, engine, address, workers, shard_size, num_gpus_per_worker, actor_class) -> tuple:
    """(the runtime as far as the options decide it, the RayOptions or None), each refused before any work."""
    choice = _runtime_from_options(runtime, precision, engine)
    return choice, ray_options(engine, choice.name, address, workers, shard_size, num_gpus_per_worker, actor_class)


def _runtime_from_options(runtime: str, precision: str, engine: str) -> _RuntimeChoice:
    """Decide ``--runtime`` where the options alone decide it (name ``auto``, why ``''`` when the data must),
    and refuse, before any work, a runtime that cannot compute ``precision`` here or is not installed."""
    auto = runtime == "auto"
    name, why = choose_runtime(runtime, precision=precision, engine=engine)
    if name != "auto":
        get_runtime(name, precision)
    return _RuntimeChoice(name, why, auto, precision, engine)


def _open_folders(source: _Source, out_dir: str, cache_dir: str | None, sharded: bool) -> tuple:
    """Return (the output folder, the cache folder, the Dataset), each checked before any work.

    Folders first: a typo in DATA_DIR should not wait for a weights download.
    """
    out_dir = check_folder(out_dir, "features", inputs=[source.data_dir])
    cache_dir = resolve_cache_dir(cache_dir, inputs=[source.data_dir, out_dir])
    dataset = discover(
        source.data_dir,
        splits=source.splits,
        split=source.split,
        seed=source.seed,
        exclude=source.exclude,
        follow_links=source.follow_links,
    )
    if sharded:
        for name in dataset.splits:
            check_folder(os.path.join(out_dir, f"{name}.shards"), "shards", option="the shards folder")
    return out_dir, cache_dir, dataset


def _training(source: _Source, dataset: Dataset, required: bool = True) -> list:
    return training_records(
        dataset, source.data_dir, source.split, source.seed, source.exclude, source.follow_links, required=required
    )


def _spec_and_plan(
    spec, source: _Source, dataset: Dataset, precision: str, calibration_images: int, workers: int
) -> tuple:
    """Return (the spec, the calibration plan): int8 and bf16 get their own key and their check images
    (bf16 calibrates nothing: its plan only gives the check images); fp32 has no plan."""
    if precision not in ("int8", "bf16"):
        return spec, None
    plan = plan_calibration(
        [r.abspath for r in _training(source, dataset)],
        calibration_images if precision == "int8" else 1,
        source.seed,
        workers,
    )
    return dataclasses.replace(
        spec, quantization=plan.key_json() if precision == "int8" else json.dumps(BF16_METHOD, sort_keys=True)
    ), plan


def _runtime_for_data(choice: _RuntimeChoice, spec, cache_dir: str, dataset: Dataset) -> _RuntimeChoice:
    """Check a new extractor's layer and pool, then finish ``auto``'s choice from the cache and the data.

    A new extractor's cut is checked before any folder; a runtime whose model for it is already
    checked here was made from that cut: no need to build the network for that.
    """
    if not _entry_exists(cache_dir, spec) and not ready_here(choice.name, spec, cache_dir):
        from bneck.features.backbones.feature_model import check_cut

        check_cut(backbone_for(spec), spec.alpha, spec.input_size, spec.layer, spec.pool)
    if choice.name != "auto":
        return choice
    name, why = choose_runtime(
        "auto",
        precision=choice.precision,
        engine=choice.engine,
        spec=spec,
        cache_dir=cache_dir,
        images=sum(len(r) for r in dataset.splits.values()),
    )
    return dataclasses.replace(choice, name=name, why=why)


def _build_extractor(
    choice: _RuntimeChoice,
    spec,
    cache_dir: str,
    source: _Source,
    dataset: Dataset,
    plan,
    ray,
    verbose: bool,
    batch_size: int,
    workers: int,
    commits: tuple[int, float],
) -> Extractor:
    """Return the Extractor over the extractor's cache entry, checking a sample of training images."""
    return Extractor(
        spec,
        RowCache(cache_dir, spec),
        batch_size=batch_size,
        workers=0 if ray is not None else workers,  # with Ray, the driver's threads only hash: all cores
        commit_rows=commits[0],
        commit_seconds=commits[1],
        verbose=verbose,
        runtime=choice.name,
        plan=plan,
        check_sample=check_sample(_training(source, dataset, required=False), source.seed),
        fallback=choice.auto and choice.precision == "fp32",
        runtime_why=choice.why,
        file_attrs=dict(
            runtime=choice.name, precision=choice.precision, engine=choice.engine, follow_links=source.follow_links
        ),
    )


def _report_after_quantization_check(
    ex: Extractor, spec, choice: _RuntimeChoice, plan, out_dir: str, cache_dir: str, min_cosine: float, force: bool
) -> ExtractionReport:
    """Return the run's ExtractionReport; with a calibration plan, quantise (or load) the network and
    check it (``gate``) first, before any row is made."""
    report = ExtractionReport(
        spec, out_dir, cache_dir, runtime=choice.name, precision=choice.precision, engine=choice.engine
    )
    if plan is not None:
        report.quantization = gate(ex.network().quantization_stats, min_cosine, force, spec.backbone, choice.precision)
        ex.record_check("quantization_check", report.quantization)
    return report


def _extract_splits(
    ex: Extractor, pool: RayPool | None, dataset: Dataset, out_dir: str, report: ExtractionReport
) -> None:
    """Hash every split, record images shared across splits, then extract each split into its file."""
    hashed = {name: hash_split(dataset, name, ex.workers) for name in dataset.splits}
    report.duplicates = cross_split_duplicates({name: usable for name, (usable, _) in hashed.items()})
    ex.record_check("cross_split_duplicates", report.duplicates)
    try:
        for split_name, (usable, quarantine) in hashed.items():
            if pool is None:
                report.splits.append(extract_split(ex, dataset, split_name, out_dir, usable, quarantine))
            else:
                report.splits.append(extract_split_sharded(ex, pool, dataset, split_name, out_dir, usable, quarantine))
    finally:
        ex.cache.close()
        if pool is not None:
            report.retries, report.worker_peak_rss_mb = pool.retries, pool.peak_rss_mb
            report.nodes = dict(pool.node_shards)
            report.forward_images = sum(s.computed for s in report.splits)  # in the actors
            pool.close()


def _finish(report: ExtractionReport, ex: Extractor, plan, keep_cache: bool) -> ExtractionReport:
    """Return ``report`` with the runtime that ran (auto may have fallen back) and what the model did;
    without ``keep_cache``, the cache's copy of the rows is removed (the split files hold every row)."""
    report.cache_dropped = -1 if keep_cache else _drop_cache_copy(ex.cache)
    report.runtime, report.runtime_why = ex.runtime, ex.runtime_why
    if ex.model is not None:  # never with Ray: the network runs in the actors
        report.model_built = True
        report.forward_images, report.forward_calls = ex.model.images, ex.model.calls
        report.converted = ex.model.converted
        report.quantized = ex.model.quantized if plan else None
    return report


def _entry_exists(cache_dir: str, spec) -> bool:
    """True when the cache holds rows of this extractor (so its layer and pool are known to work)."""
    folder = os.path.join(cache_dir, "features", spec.key)
    return os.path.isfile(os.path.join(folder, "meta.json")) and any(
        n.startswith("rows-") for n in (os.listdir(folder) if os.path.isdir(folder) else ())
    )
