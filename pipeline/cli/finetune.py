"""``bneck finetune``: stage 3 from the command line."""

from __future__ import annotations

import argparse

from bneck.core.options import namespace_values
from bneck.pipeline.cli.reporting import spent
from bneck.pipeline.finetuning.options import AUGMENTATIONS, FINETUNE


def add_parser(sub) -> None:
    """Register ``finetune`` and its options."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune the top of the base with a trained head",
        description="Rebuild the base recorded in the head's manifest, put the "
        "trained head on top, unfreeze the top of the base and fine-tune "
        "on augmented images (Adam with warm-up and cosine decay by default; "
        "SGD with momentum is the reference recipe: --optimizer sgd).",
    )
    p.add_argument("head_dir", metavar="HEAD_DIR", help="a Keras head folder from `bneck train`, e.g. models/dense")
    p.add_argument(
        "--data",
        default=None,
        metavar="DATA_DIR",
        help="the images the head's features were extracted from (default: the folder they "
        "recorded); the exact recorded images are used, checked by sha256",
    )
    p.add_argument("--out", required=True, metavar="FT_DIR")
    FINETUNE.add_arguments(p)
    p.add_argument("--no-augment", action="store_true", help="switch every augmentation off")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Fine-tune and print validation/test accuracy before and after; returns 0."""
    from bneck.pipeline.finetuning.stage import finetune

    options = namespace_values(args, FINETUNE)
    if args.no_augment:
        options.update({k: (False if k == "flip" else 0.0) for k in AUGMENTATIONS})
    result = finetune(args.head_dir, args.data, args.out, verbose=not args.quiet, **options)
    if result.reused:
        print(
            f"{result.folder} already holds this head fine-tuned on the same data with the same options: "
            "reused (--retrain to fine-tune again)."
        )
    m = result.metrics
    before = m["before_finetuning"]["validation"]["accuracy"]
    if m["kept_epoch"]:
        print(
            f"validation accuracy: {100 * before:.1f}% with the frozen head -> "
            f"{100 * m['validation']['accuracy']:.1f}% fine-tuned (epoch {m['kept_epoch']} kept)"
        )
    else:
        print(
            f"validation accuracy: no epoch beat the frozen head's {100 * before:.1f}%, so the "
            f"starting weights were kept. Try a lower --lr (now {result.config['lr']:g}) or a later "
            "--unfreeze-from."
        )
    if "test" in m:
        print(f"test accuracy: {100 * m['test']['accuracy']:.1f}%")
    if "tta" in m:
        scored = ", ".join(f"{split} {100 * v['accuracy']:.1f}%" for split, v in m["tta"].items())
        print(f"with mirror test-time augmentation: {scored}")
    if "cache_frozen" in m and not result.reused:  # a reused folder's figures are its making's, not this call's
        cached = m["cache_frozen"]
        print(
            f"cached views ({cached['layer']}, {cached.get('precision', 'float32')}): "
            f"{cached['rows_computed']:,} computed, {cached['rows_reused']:,} reused from the cache "
            f"({cached['seconds']:.0f} s)"
        )
    took = spent(result.folder, result.seconds, True) if result.reused else f"training {result.seconds:.0f} s"
    print(f"fine-tuned model: {result.folder} ({took})")
    return 0
