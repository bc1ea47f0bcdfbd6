"""``bneck extract``: stage 1 from the command line."""

from __future__ import annotations

import argparse

from bneck import features
from bneck.core.options import namespace_values
from bneck.features.extraction.options import EXTRACT
from bneck.features.runtimes import cpu


def add_parser(sub) -> None:
    """Register ``extract``; its options come from the stage's table (``bneck.features.extraction.options``)."""
    p = sub.add_parser(
        "extract",
        help="extract bottleneck features into one HDF5 file per split",
        description="Run a pretrained conv base over DATA_DIR once and write "
        "OUT/<split>.h5. Images already in the cache (same content, "
        "same extractor) are not recomputed.",
    )
    p.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        help="train/, validation/, test/ with one folder per class, or one folder per class",
    )
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for <split>.h5 files")
    EXTRACT.add_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Extract, print the summary table and the quarantined files; returns 0."""
    report = features.extract(args.data_dir, args.out, **namespace_values(args, EXTRACT), verbose=not args.quiet)
    spec = report.spec
    print(
        f"extractor {spec.key[:12]}  {spec.backbone}"
        f"{f' alpha={spec.alpha}' if spec.alpha else ''} weights={spec.weights} "
        f"layer={spec.layer} pool={spec.pool} size={spec.input_size} dtype={spec.dtype} "
        f"runtime={report.runtime} precision={report.precision}"
    )
    q = report.quantization
    if q:
        made = (
            f"; calibrated on {q['calibration_images']} training images"
            f"{' (quantised now)' if report.quantized else ' (quantised model from the cache)'}"
            if report.precision == "int8"
            else ""
        )
        print(
            f"{report.precision} vs fp32 on {q['check_images']} held-back training images: cosine min "
            f"{q['cosine_min']:.4f}, mean {q['cosine_mean']:.4f} (--min-cosine {q['min_cosine']}"
            f"{'; below it, accepted with --force' if q['forced'] else ''}){made}"
        )
    print(report.summary())
    sharded = [s for s in report.splits if s.shards]
    if sharded:
        print(
            "ray shards: "
            + ", ".join(
                f"{s.split} {s.shards['run']} run / {s.shards['reused']} kept of {s.shards['total']}" for s in sharded
            )
            + (f" on {len(report.nodes)} node(s) ({_shards_per_node(report.nodes)} shards)" if report.nodes else "")
            + (f"; {report.retries} failed attempt(s) retried" if report.retries else "")
        )
    print(f"\nnetwork ran on {report.forward_images} image(s); cache: {report.cache_dir}")
    if report.cache_dropped == -2:
        print("--no-keep-cache: the cache is shared read-only, so its rows stay (its writer decides)")
    elif report.cache_dropped is None:
        print(
            f"--no-keep-cache: the cache's rows were kept (another process uses them); "
            f"`bneck cache rm {report.spec.key[:16]}` removes them later"
        )
    elif report.cache_dropped >= 0:
        print(
            f"--no-keep-cache: removed this extractor's rows from the cache ({report.cache_dropped / 2**20:.1f} MB); "
            "the split files hold every row (extracting these images again computes them again)"
        )
    print(f"runtime: {report.runtime} ({report.runtime_why})")
    if report.precision == "fp32" and (hint := cpu.precision_hint()):
        print(hint)
    return 0


def _shards_per_node(nodes: dict) -> str:
    """ "5, 3, 2": the shards each node finished, most first (a node lost mid-run counts what it finished)."""
    return ", ".join(str(n) for n in sorted(nodes.values(), reverse=True))
