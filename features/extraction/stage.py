"""Stage 1: run the conv base once per image content and write one HDF5 file per split.

For each split: hash every image, look the hashes up in the shared cache, run the
network only on images whose content it has never seen with this extractor,
commit those rows to the cache as they are made, then write ``OUT/<split>.h5``
from the cache. A rerun on unchanged images never builds the network.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

from bneck.features.backbones.registry import get_backbone
from bneck.features.cache.rows import CorruptChunk, MissingRows, RowCache, missing_shas, remaking_missing, resolve_cache_dir
from bneck.features.images.dataset import Dataset, discover
from bneck.core.errors import ConfigError, FeatureFileError
from bneck.features.extraction.options import DEFAULT_SHARD_SIZE, EXTRACT
from bneck.features.extraction.report import ExtractionReport, SplitReport
from bneck.features.runtimes.extractor import Extractor, split_content
from bneck.core.folders import check_folder, claim_folder
from bneck.features.runtimes.quantize import BF16_METHOD, DEFAULT_CALIBRATION_IMAGES, DEFAULT_MIN_COSINE, gate, plan_calibration
from bneck.features.extraction.ray_engine import RayPool, extract_split_sharded, ray_options
from bneck.features.runtimes.openvino import checked_here
from bneck.features.backbones.resolve import resolve_spec
from bneck.features.images.selection import check_sample, cross_split_duplicates, hash_split, training_records
from bneck.features.featurefile.format import holds, write_split_file


MAX_MISSING_ROW_RETRIES = 3


def _extract_split(ex: Extractor, dataset: Dataset, split: str, out_dir: str, usable: list,
                   quarantine: list) -> SplitReport:
    """The local engine: compute the split's missing rows here, then write its file from the cache."""
    start = time.perf_counter()
    ex.cache.refresh()
    todo_shas = missing_shas(ex.cache, (sha for _, sha in usable))
    first_path = {}
    for record, sha in usable:
        first_path.setdefault(sha, record.abspath)
    failed = ex.compute(split, [(sha, first_path[sha]) for sha in todo_shas])
    path = os.path.join(out_dir, f"{split}.h5")
    attrs = ex.split_attrs(dataset)

    def write() -> tuple:
        content = split_content(dataset, split, usable, failed, quarantine)
        shape, dtype = ex.cache.row_layout(content.shas[0])
        # An existing file is kept only if it holds the cache's own rows, bit for bit: a file
        # someone handed over (re-signed or not) is never taken as this extraction's output.
        # (no file there: nothing to compare, and no reason to read every row twice)
        unchanged = os.path.isfile(path) and holds(path, attrs, content, ex.cache.digest(content.shas))
        if not unchanged:
            write_split_file(path, content, attrs, shape, str(dtype),
                             lambda sink: ex.cache.read_rows(content.shas, sink))
        return content, unchanged

    def remake(shas: list[str]) -> None:  # `bneck cache gc` removed rows meanwhile: make them again
        nonlocal todo_shas
        failed.update(ex.compute(split, [(sha, first_path[sha]) for sha in shas]))
        todo_shas = list(dict.fromkeys(todo_shas + shas))

    try:
        content, unchanged = remaking_missing(write, remake, MAX_MISSING_ROW_RETRIES)
    except MissingRows:
        raise FeatureFileError(f"rows of {split!r} kept leaving the cache {ex.cache.folder} while "
                               "this run wrote them (is `bneck cache gc --older-than` running "
                               "in a loop?). Rerun when it has finished.") from None
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


def extract(data_dir: str, out_dir: str, *, backbone: str = "vgg16",
            weights: Optional[str] = "imagenet", size: Optional[int] = None,
            layer: Optional[str] = None, pool: str = "none", dtype: str = "float32",
            alpha: Optional[float] = None, splits: Optional[Sequence[str]] = None,
            split=None, seed: int = 0, exclude: Sequence[str] = (), follow_links: bool = False,
            batch_size: int = 32,
            cache_dir: Optional[str] = None, workers: int = 0, commit_rows: int = 1024,
            commit_seconds: float = 20.0, runtime: str = "auto", precision: str = "fp32",
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
    auto = runtime == "auto"
    runtime, runtime_why = _early_runtime(runtime, precision, engine)
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
    if precision in ("int8", "bf16"):  # bf16 calibrates nothing: the plan only gives its check images
        plan = plan_calibration([r.abspath for r in training_records(dataset, data_dir, split, seed, exclude,
                                                                      opts["follow_links"])],
                                calibration_images if precision == "int8" else 1, seed, workers)
        spec = dataclasses.replace(spec, quantization=plan.key_json() if precision == "int8"
                                   else json.dumps(BF16_METHOD, sort_keys=True))
    converted = runtime in ("auto", "openvino") and checked_here(spec, cache_dir)
    # A new extractor: its layer and pool are checked before any folder (a converted model that was
    # checked against TensorFlow here was made from them: no need to build the network for that).
    if not _entry_exists(cache_dir, spec) and not converted:
        from bneck.features.backbones.feature_model import check_cut
        check_cut(get_backbone(spec.backbone), spec.alpha, spec.input_size, spec.layer, spec.pool)
    if runtime == "auto":
        runtime, runtime_why = _auto_runtime(converted, sum(len(r) for r in dataset.splits.values()))
    claim_folder(out_dir, "features", inputs=[data_dir])
    training = training_records(dataset, data_dir, split, seed, exclude, opts["follow_links"], required=False)
    pool = RayPool(options, spec, cache_dir, batch_size) if options is not None else None
    ex = Extractor(spec, RowCache(cache_dir, spec), batch_size=batch_size,
                   workers=0 if pool else workers,  # with Ray, the driver's threads only hash: all cores
                   commit_rows=commit_rows, commit_seconds=commit_seconds, verbose=verbose, runtime=runtime,
                   plan=plan, check_sample=check_sample(training, seed), fallback=auto and precision == "fp32",
                   runtime_why=runtime_why,
                   file_attrs=dict(runtime=runtime, precision=precision, engine=engine,
                                   follow_links=opts["follow_links"]))
    report = ExtractionReport(spec, out_dir, cache_dir, runtime=runtime, precision=precision, engine=engine)
    if plan is not None:  # quantise (or load) and check before any row is made
        model = ex.network()
        report.quantization = gate(model.quantization_stats, min_cosine, force, spec.backbone, precision)
        ex.record_check("quantization_check", report.quantization)
    hashed = {name: hash_split(dataset, name, ex.workers) for name in dataset.splits}
    report.duplicates = cross_split_duplicates({name: usable for name, (usable, _) in hashed.items()})
    ex.record_check("cross_split_duplicates", report.duplicates)
    try:
        for split_name, (usable, quarantine) in hashed.items():
            if pool is None:
                report.splits.append(_extract_split(ex, dataset, split_name, out_dir, usable, quarantine))
            else:
                report.splits.append(extract_split_sharded(ex, pool, dataset, split_name, out_dir, usable,
                                                           quarantine))
    finally:
        ex.cache.close()
        if pool is not None:
            report.retries, report.worker_peak_rss_mb = pool.retries, pool.peak_rss_mb
            report.forward_images = sum(s.computed for s in report.splits)  # in the actors
            pool.close()
    report.runtime, report.runtime_why = ex.runtime, ex.runtime_why
    if ex.model is not None:  # never with Ray: the network runs in the actors
        report.model_built = True
        report.forward_images, report.forward_calls = ex.model.images, ex.model.calls
        report.converted = getattr(ex.model, "converted", None)
        report.quantized = getattr(ex.model, "quantized", None) if plan else None
    return report


def _entry_exists(cache_dir: str, spec) -> bool:
    """True when the cache holds rows of this extractor (so its layer and pool are known to work)."""
    folder = os.path.join(cache_dir, "features", spec.key)
    return os.path.isfile(os.path.join(folder, "meta.json")) and any(
        n.startswith("rows-") for n in (os.listdir(folder) if os.path.isdir(folder) else ()))


# From this many images in a data set, `--runtime auto` converts to OpenVINO (about 5 s once for
# MobileNet, repaid at about 2 ms an image; README "Which runtime").
AUTO_CONVERT_IMAGES = 2000


def _early_runtime(runtime: str, precision: str, engine: str) -> tuple[str, str]:
    """Decide ``--runtime auto`` where the options alone decide it; ('auto', '') when the data must."""
    if runtime != "auto":
        return runtime, "asked for"
    if precision != "fp32":
        return "openvino", f"auto: {precision} runs on OpenVINO"
    if engine == "ray":
        return "tensorflow", "auto: the Ray engine runs TensorFlow"
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "tensorflow", "auto: OpenVINO is not installed (pip install -e \".[openvino]\")"
    return "auto", ""


def _auto_runtime(converted: bool, images: int) -> tuple[str, str]:
    """OpenVINO when its converted model is already checked here (``converted``), or when the set is large
    enough to pay for converting it; TensorFlow otherwise."""
    if converted:
        return "openvino", "auto: its converted model is cached and was checked against TensorFlow on this CPU"
    if images >= AUTO_CONVERT_IMAGES:
        return "openvino", f"auto: {images} images, enough to pay for converting once (checked before its first row)"
    return "tensorflow", (f"auto: {images} images, too few to pay for converting to OpenVINO (from "
                          f"{AUTO_CONVERT_IMAGES}; --runtime openvino converts anyway)")


def _check_combinations(runtime: str, precision: str) -> None:
    """Refuse options that do not go together, and say how to install a missing runtime, before any work."""
    if precision != "fp32" and runtime != "openvino":
        raise ConfigError(f"--precision {precision} runs on OpenVINO: add --runtime openvino (or leave --runtime "
                          f"auto). Received: runtime={runtime!r}, precision={precision!r}.")
    if precision == "bf16":
        from bneck.features.runtimes import cpu

        if not cpu.has_native_bf16():
            raise ConfigError(
                "--precision bf16 needs a CPU that computes bf16 natively (flag avx512_bf16 or amx_bf16 in "
                f"/proc/cpuinfo); this one has {', '.join(cpu.relevant()) or 'none of the relevant flags'}. Use "
                "--precision fp32 (the default), or int8 on CPUs with VNNI (`bneck backbones` shows what this CPU "
                f"supports). Received: precision='bf16'.")
    if runtime == "openvino":
        from bneck.features.runtimes.openvino_compile import import_openvino
        import_openvino()
        if precision == "int8":
            from bneck.features.runtimes.quantize import import_nncf
            import_nncf()
