"""``bneck extract``: stage 1 from the command line."""
from __future__ import annotations

import argparse

import features
from features.extract import RUNTIMES
from features.quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MIN_COSINE, PRECISIONS
from features.ray_engine import DEFAULT_SHARD_SIZE, ENGINES


def _splits(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_parser(sub, backbones) -> None:
    """Register ``extract`` and its options."""
    p = sub.add_parser("extract", help="extract bottleneck features into one HDF5 file per split",
                       description="Run a pretrained conv base over DATA_DIR once and write "
                                   "OUT/<split>.h5. Images already in the cache (same content, "
                                   "same extractor) are not recomputed.")
    p.add_argument("data_dir", metavar="DATA_DIR",
                   help="train/, validation/, test/ with one folder per class, or one folder per class")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for <split>.h5 files")
    p.add_argument("--backbone", default="vgg16", choices=backbones, help="conv base (default vgg16)")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH",
                   help="ImageNet weights from the Keras cache, random init, or a local .h5 file")
    p.add_argument("--alpha", type=float, default=None, help="width multiplier for mobilenet/mobilenetv2")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (default: the backbone's)")
    p.add_argument("--layer", default=None, help="take the output of this layer (default: the backbone's)")
    p.add_argument("--pool", default="none", choices=features.key.POOLS, help="spatial pooling")
    p.add_argument("--dtype", default="float32", choices=features.key.DTYPES, help="stored precision")
    p.add_argument("--runtime", default="tensorflow", choices=RUNTIMES,
                   help="inference runtime: tensorflow, or openvino (fp32, same features, "
                        "faster on CPUs; pip install -e '.[openvino]')")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32, or int8 (OpenVINO + NNCF; calibrated on training images only, "
                        "checked against fp32; its own cache key)")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                   help=f"int8: training images that calibrate the quantisation (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE, metavar="C",
                   help=f"int8: refuse if any held-back training image's features have cosine < C "
                        f"to fp32 (default {DEFAULT_MIN_COSINE})")
    p.add_argument("--force", action="store_true", help="int8: use the quantised model even below --min-cosine")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (not in the key)")
    p.add_argument("--splits", type=_splits, default=None, metavar="S[,S]",
                   help="which of train,validation,test to extract (default: all present)")
    p.add_argument("--split", default=None, metavar="TRAIN,VAL,TEST",
                   help="fractions for a single-root layout (default 0.7,0.15,0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the single-root split")
    p.add_argument("--exclude", nargs="+", default=(), metavar="CLASS", help="classes to leave out")
    p.add_argument("--cache-dir", default=None, help="shared cache (default $BNECK_CACHE or ~/.cache/bneck)")
    p.add_argument("--workers", type=int, default=0,
                   help="local: decoding threads (default: all cores); ray: actors (default: one per node)")
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="local, or ray: actors on a Ray cluster write shard files, stitched into "
                        "<split>.h5 by a virtual dataset (pip install -e '.[ray]')")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="ray: the cluster to join (default: start a local one)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="M",
                   help=f"ray: images per shard file (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--num-gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="ray: GPUs each actor asks for (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Extract, print the summary table and the quarantined files; returns 0."""
    report = features.extract(
        args.data_dir, args.out, backbone=args.backbone, weights=args.weights, size=args.size,
        layer=args.layer, pool=args.pool, dtype=args.dtype, alpha=args.alpha, splits=args.splits,
        split=args.split, seed=args.seed, exclude=args.exclude, batch_size=args.batch_size,
        cache_dir=args.cache_dir, workers=args.workers, runtime=args.runtime, precision=args.precision,
        calibration_images=args.calibration_images, min_cosine=args.min_cosine, force=args.force,
        engine=args.engine, address=args.address, shard_size=args.shard_size,
        num_gpus_per_worker=args.num_gpus_per_worker, verbose=not args.quiet)
    spec = report.spec
    print(f"extractor {spec.key[:12]}  {spec.backbone}"
          f"{f' alpha={spec.alpha}' if spec.alpha else ''} weights={spec.weights} "
          f"layer={spec.layer} pool={spec.pool} size={spec.input_size} dtype={spec.dtype} "
          f"runtime={report.runtime} precision={report.precision}")
    q = report.quantization
    if q:
        print(f"int8 vs fp32 on {q['check_images']} held-back training images: cosine min "
              f"{q['cosine_min']:.4f}, mean {q['cosine_mean']:.4f} (--min-cosine {q['min_cosine']}"
              f"{'; below it, accepted with --force' if q['forced'] else ''}); calibrated on "
              f"{q['calibration_images']} training images"
              f"{' (quantised now)' if report.quantized else ' (quantised model from the cache)'}")
    print(report.table())
    quarantined = [(s.split, p, why) for s in report.splits for p, why in s.quarantine]
    if quarantined:
        print(f"\nquarantined ({len(quarantined)}):")
        for split, path, why in quarantined[:20]:
            print(f"  {split}: {path}: {why}")
        if len(quarantined) > 20:
            print(f"  ... and {len(quarantined) - 20} more (listed in each file's 'quarantine' dataset)")
    sharded = [s for s in report.splits if s.shards]
    if sharded:
        print("ray shards: " + ", ".join(f"{s.split} {s.shards['run']} run / {s.shards['reused']} kept "
                                         f"of {s.shards['total']}" for s in sharded)
              + (f"; {report.retries} failed attempt(s) retried" if report.retries else ""))
    print(f"\nnetwork ran on {report.forward_images} image(s); cache: {report.cache_dir}")
    return 0
