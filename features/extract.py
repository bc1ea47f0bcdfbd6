"""Stage 1: run the conv base once per image content and write one HDF5 file per split.

For each split: hash every image, look the hashes up in the shared cache, run the
network only on images whose content it has never seen with this extractor,
commit those rows to the cache as they are made, then write ``OUT/<split>.h5``
from the cache. A rerun on unchanged images never builds the network.
"""
from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np

from .backbones import get_backbone
from .batches import decoded_batches
from .cache import CorruptChunk, MissingRows, RowCache, missing_shas, resolve_cache_dir
from .dataset import Dataset, discover
from .errors import ConfigError, DatasetError, FeatureFileError
from .extract_options import DEFAULT_SHARD_SIZE, EXTRACT
from .extract_report import ExtractionReport, SplitReport
from .key import DTYPES, POOLS, ExtractorSpec
from .outputs import check_folder, claim_folder
from .progress import progress_bar
from .quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MIN_COSINE, gate, plan_calibration
from .ray_engine import ray_options
from .split_inputs import check_sample, cross_split_duplicates, hash_split, training_records
from .store import SplitContent, holds, write_split_file
from .weights import resolve_weights


MAX_MISSING_ROW_RETRIES = 3


def resolve_spec(backbone: str = "vgg16", weights: Optional[str] = "imagenet",
                 size: Optional[int] = None, layer: Optional[str] = None, pool: str = "none",
                 dtype: str = "float32", alpha: Optional[float] = None) -> ExtractorSpec:
    """Return the spec for these extractor options (weights hashed, defaults filled in).

    Raises ConfigError for a bad option and WeightsError for unavailable weights.
    """
    entry = get_backbone(backbone)
    alpha = entry.resolve_alpha(alpha)
    size = entry.validate_size(entry.default_size if size is None else size)
    if pool not in POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(POOLS)}. Received: pool={pool!r}.")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}. Received: dtype={dtype!r}.")
    resolved = resolve_weights(entry, alpha, size, weights)
    return ExtractorSpec(backbone=entry.name, alpha=alpha, weights=resolved.label,
                         weights_sha256=resolved.sha256, layer=layer or entry.default_layer,
                         pool=pool, input_size=size,
                         preprocessing=f"keras.applications.{entry.module}.preprocess_input "
                                       f"({entry.preprocessing})",
                         dtype=dtype, weights_path=resolved.path)


class _Extractor:
    """Holds the cache and the lazily built network across the splits of one run."""

    def __init__(self, spec, cache, batch_size, workers, commit_rows, commit_seconds, verbose,
                 runtime="tensorflow", plan=None, check_sample=()):
        self.spec, self.cache, self.runtime, self.plan = spec, cache, runtime, plan
        self.batch_size, self.workers, self.verbose = batch_size, workers, verbose
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self.check_sample = list(check_sample)  # image paths a new runtime is checked on
        self.model = None
        self.file_attrs: dict = {}
        self.pool = None  # --engine ray: the RayPool

    def network(self):
        """Return the feature model, built, checked against the reference and traced on first use.

        Raises RuntimeMismatch (before any row is made) when an OpenVINO fp32 model's
        features differ from TensorFlow's on ``check_sample`` beyond the tolerance.
        """
        if self.model is None:
            if self.runtime == "openvino":
                from .runtime_openvino import OpenVINOFeatureModel
                model = OpenVINOFeatureModel(get_backbone(self.spec.backbone), self.spec, self.cache.cache_dir,
                                             self.plan, self.workers, sample=self._sample)
                self.file_attrs["equivalence"] = model.equivalence
            else:
                from .model import FeatureModel
                model = FeatureModel(get_backbone(self.spec.backbone), self.spec)
            model.warm_up()
            self.model = model
        return self.model

    def _sample(self) -> np.ndarray:
        """Return the decoded check sample (uint8), skipping images that do not decode."""
        batches = [b for _, b, _ in decoded_batches([(p, p) for p in self.check_sample], self.spec.input_size,
                                                    len(self.check_sample) or 1, self.workers) if len(b)]
        if not batches:
            raise DatasetError("none of the images sampled to check the runtime could be decoded.")
        return np.concatenate(batches)

    def compute(self, split: str, todo: list[tuple[str, str]]) -> dict[str, str]:
        """Run the network on (sha, path) items, committing rows; returns {sha: failure reason}."""
        failed: dict[str, str] = {}
        if not todo:
            return failed
        # Build and trace the network while the first images are being decoded. The build is always
        # waited for before returning (below), even when no image decoded: a build left running
        # would draw from the process's random state while the next stage seeds and draws from it.
        builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bneck-build")
        building = builder.submit(self.network)
        model = None
        pending_shas, pending_rows = [], []
        last_commit = time.monotonic()

        def commit():
            nonlocal pending_shas, pending_rows, last_commit
            if pending_shas:
                self.cache.commit(pending_shas, np.concatenate(pending_rows))
            pending_shas, pending_rows, last_commit = [], [], time.monotonic()

        bar = progress_bar(len(todo), f"{split}: computing", self.verbose)
        try:
            for shas, batch, failures in decoded_batches(todo, self.spec.input_size, self.batch_size,
                                                         self.workers, keys_are_sha256=True):
                failed.update(failures)
                if shas:
                    model = model or building.result()
                    pending_rows.append(model(batch))
                    pending_shas.extend(shas)
                if len(pending_shas) >= self.commit_rows or \
                        time.monotonic() - last_commit >= self.commit_seconds:
                    commit()
                bar.update(len(shas) + len(failures))
        finally:
            commit()  # also on Ctrl-C: nothing computed is thrown away
            bar.close()
            builder.shutdown(wait=True)  # nothing of this stage keeps running behind the next one
        return failed


def split_attrs(ex: _Extractor, dataset: Dataset) -> dict:
    spec = ex.spec
    attrs = dict(spec.describe(), **ex.file_attrs)
    # weights_path is where the weights were read from: informative (later stages look
    # there first, and check the bytes by weights_sha256), never part of the key.
    attrs.update(extractor=spec.describe(), extractor_key=spec.key, weights_path=spec.weights_path or "",
                 class_names=dataset.class_names, data_root=dataset.root, layout=dataset.layout,
                 split_spec=dataset.split_spec, excluded_classes=dataset.excluded_classes)
    return attrs


def _extract_split(ex: _Extractor, dataset: Dataset, split: str, out_dir: str, usable: list,
                   quarantine: list) -> SplitReport:
    start = time.perf_counter()
    if ex.pool is not None:
        from .ray_engine import extract_split_sharded
        return extract_split_sharded(ex, dataset, split, out_dir, usable, quarantine, start)
    ex.cache.refresh()
    todo_shas = missing_shas(ex.cache, (sha for _, sha in usable))
    first_path = {}
    for record, sha in usable:
        first_path.setdefault(sha, record.abspath)
    failed = ex.compute(split, [(sha, first_path[sha]) for sha in todo_shas])
    path = os.path.join(out_dir, f"{split}.h5")
    for attempt in range(MAX_MISSING_ROW_RETRIES + 1):
        content = split_content(dataset, split, usable, failed, quarantine)
        attrs = split_attrs(ex, dataset)
        try:
            shape, dtype = ex.cache.row_layout(content.shas[0])
            # An existing file is kept only if it holds the cache's own rows, bit for bit: a file
            # someone handed over (re-signed or not) is never taken as this extraction's output.
            unchanged = holds(path, attrs, content, ex.cache.digest(content.shas))
            if not unchanged:
                write_split_file(path, content, attrs, shape, str(dtype),
                                 lambda sink: ex.cache.read_rows(content.shas, sink))
            break
        except MissingRows as exc:  # `bneck cache gc` removed rows meanwhile: make them again
            if attempt == MAX_MISSING_ROW_RETRIES:
                raise FeatureFileError(f"rows of {split!r} kept leaving the cache {ex.cache.folder} while "
                                       "this run wrote them (is `bneck cache gc --older-than` running "
                                       "in a loop?). Rerun when it has finished.") from None
            failed.update(ex.compute(split, [(sha, first_path[sha]) for sha in exc.shas]))
            todo_shas = list(dict.fromkeys(todo_shas + exc.shas))
        except CorruptChunk as exc:
            raise FeatureFileError(f"the cache file {exc} is damaged (its features fail their "
                                   "checksum). Run `bneck cache gc` to drop it, then rerun to "
                                   "recompute its rows.") from None
    todo = set(todo_shas)
    computed = len(todo - set(failed))
    reused_rows = sum(1 for sha in content.shas if sha not in todo)
    return SplitReport(split, len(content.shas), len(dataset.class_names), len(content.quarantine),
                       reused_rows, computed, time.perf_counter() - start, path, content.quarantine,
                       file_unchanged=unchanged)


def split_content(dataset: Dataset, split: str, usable: list, failed: dict, quarantine: list) -> SplitContent:
    """Return the split's rows in output order: the usable (record, sha) pairs whose image
    decoded, with those that did not added to ``quarantine`` with their reason.

    Raises DatasetError when no image is left.
    """
    kept = [(r, sha) for r, sha in usable if sha not in failed]
    quarantine = quarantine + [(r.path, failed[sha]) for r, sha in usable if sha in failed]
    if not kept:
        raise DatasetError(f"every image of split {split!r} under {dataset.root} was quarantined "
                           f"({len(quarantine)} files); first: {quarantine[:1]}.")
    return SplitContent(split, [r.path for r, _ in kept], [r.label for r, _ in kept],
                        [sha for _, sha in kept], sorted(quarantine))


def extract(data_dir: str, out_dir: str, *, backbone: str = "vgg16",
            weights: Optional[str] = "imagenet", size: Optional[int] = None,
            layer: Optional[str] = None, pool: str = "none", dtype: str = "float32",
            alpha: Optional[float] = None, splits: Optional[Sequence[str]] = None,
            split=None, seed: int = 0, exclude: Sequence[str] = (), follow_links: bool = False,
            batch_size: int = 32,
            cache_dir: Optional[str] = None, workers: int = 0, commit_rows: int = 1024,
            commit_seconds: float = 20.0, runtime: str = "tensorflow", precision: str = "fp32",
            calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
            min_cosine: float = DEFAULT_MIN_COSINE, force: bool = False,
            engine: str = "local", address: Optional[str] = None, shard_size: int = DEFAULT_SHARD_SIZE,
            num_gpus_per_worker: float = 0.0, actor_class=None,
            verbose: bool = True) -> ExtractionReport:
    """Extract bottleneck features for every split of ``data_dir`` into ``out_dir/<split>.h5``.

    ``precision="int8"`` (OpenVINO only) quantises on ``calibration_images`` training
    images and refuses if the features' cosine to fp32 falls below ``min_cosine``
    on held-back training images, unless ``force``.

    ``engine="ray"`` runs the network in Ray actors (``workers`` of them; 0: one per
    node) on the cluster at ``address`` (None: start a local one), ``shard_size``
    images per shard file; see ``ray_engine``. With the local engine ``workers`` is the
    number of decoding threads.

    Returns an ExtractionReport. Raises ConfigError, DatasetError, WeightsError or
    FeatureFileError (all BneckError) for user mistakes; rows computed before an
    error or Ctrl-C stay in the cache.
    """
    opts = EXTRACT.check({name: value for name, value in locals().items() if name in EXTRACT})
    (batch_size, runtime, precision, splits, split, exclude, workers) = (
        opts[k] for k in ("batch_size", "runtime", "precision", "splits", "split", "exclude", "workers"))
    _check_combinations(runtime, precision)
    options = ray_options(engine, runtime, address, workers, shard_size, num_gpus_per_worker, actor_class)
    # Folders first: a typo in DATA_DIR should not wait for a weights download.
    out_dir = check_folder(out_dir, "features", inputs=[data_dir])
    cache_dir = resolve_cache_dir(cache_dir, inputs=[data_dir, out_dir])
    dataset = discover(data_dir, splits=splits, split=split, seed=seed, exclude=exclude,
                       follow_links=opts["follow_links"])
    if options is not None:
        for name in dataset.splits:
            check_folder(os.path.join(out_dir, f"{name}.shards"), "shards", option="the shards folder")
    spec = resolve_spec(backbone, weights, size, layer, pool, dtype, alpha)
    plan = None
    if precision == "int8":
        plan = plan_calibration([r.abspath for r in training_records(dataset, data_dir, split, seed, exclude,
                                                                      opts["follow_links"])],
                                calibration_images, seed, workers)
        spec = dataclasses.replace(spec, quantization=plan.key_json())
    claim_folder(out_dir, "features", inputs=[data_dir])
    training = training_records(dataset, data_dir, split, seed, exclude, opts["follow_links"], required=False)
    ex = _Extractor(spec, RowCache(cache_dir, spec), batch_size, workers, commit_rows,
                    commit_seconds, verbose, runtime, plan, check_sample(training, seed))
    report = ExtractionReport(spec, out_dir, cache_dir, runtime=runtime, precision=precision, engine=engine)
    ex.file_attrs = dict(runtime=runtime, precision=precision, engine=engine, follow_links=opts["follow_links"])
    if options is not None:
        from .ray_engine import RayPool
        ex.pool = RayPool(options, spec, cache_dir, batch_size)
        ex.workers = 0  # decoding threads for hashing: all cores
    if plan is not None:  # quantise (or load) and check before any row is made
        model = ex.network()
        report.quantization = gate(model.quantization_stats, min_cosine, force, spec.backbone)
        ex.file_attrs["quantization_check"] = report.quantization
    hashed = {name: hash_split(dataset, name, ex.workers) for name in dataset.splits}
    report.duplicates = cross_split_duplicates({name: usable for name, (usable, _) in hashed.items()})
    ex.file_attrs["cross_split_duplicates"] = report.duplicates
    try:
        for split_name, (usable, quarantine) in hashed.items():
            report.splits.append(_extract_split(ex, dataset, split_name, out_dir, usable, quarantine))
    finally:
        ex.cache.close()
        if ex.pool is not None:
            report.retries, report.worker_peak_rss_mb = ex.pool.retries, ex.pool.peak_rss_mb
            report.forward_images = sum(s.computed for s in report.splits)  # in the actors
            ex.pool.close()
    if ex.model is not None:  # never with Ray: the network runs in the actors
        report.model_built = True
        report.forward_images, report.forward_calls = ex.model.images, ex.model.calls
        report.converted = getattr(ex.model, "converted", None)
        report.quantized = getattr(ex.model, "quantized", None) if plan else None
    return report


def _check_combinations(runtime: str, precision: str) -> None:
    """Refuse options that do not go together, and say how to install a missing runtime, before any work."""
    if precision == "int8" and runtime != "openvino":
        raise ConfigError(f"--precision int8 runs on OpenVINO: add --runtime openvino. "
                          f"Received: runtime={runtime!r}, precision='int8'.")
    if runtime == "openvino":
        from .openvino_core import import_openvino
        import_openvino()
        if precision == "int8":
            from .quantize import import_nncf
            import_nncf()
