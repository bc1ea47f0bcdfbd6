"""``bneck finetune``: stage 3 from the command line."""
from __future__ import annotations

import argparse

from .finetune_model import AUGMENT_DEFAULTS


def add_parser(sub) -> None:
    """Register ``finetune`` and its options."""
    p = sub.add_parser("finetune", help="fine-tune the top of the base with a trained head",
                       description="Rebuild the base recorded in the head's manifest, put the "
                                   "trained head on top, unfreeze the top block and fine-tune "
                                   "on augmented images (SGD with momentum by default).")
    p.add_argument("head_dir", metavar="HEAD_DIR", help="a Keras head folder from `bneck train`, e.g. models/dense")
    p.add_argument("--data", required=True, metavar="DATA_DIR", help="train/ and validation/ (test/ optional)")
    p.add_argument("--out", required=True, metavar="FT_DIR")
    p.add_argument("--unfreeze-from", default="default", metavar="LAYER",
                   help="first trainable layer; 'default' (the backbone's last block) or 'none'")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "rmsprop", "adam"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE")
    p.add_argument("--seed", type=int, default=0)
    a = p.add_argument_group("augmentation (training images only; 0 switches one off)")
    a.add_argument("--rotation", type=float, default=AUGMENT_DEFAULTS["rotation"], metavar="DEGREES")
    a.add_argument("--shift", type=float, default=AUGMENT_DEFAULTS["shift"])
    a.add_argument("--shear", type=float, default=AUGMENT_DEFAULTS["shear"])
    a.add_argument("--zoom", type=float, default=AUGMENT_DEFAULTS["zoom"])
    a.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    a.add_argument("--no-augment", action="store_true", help="switch every augmentation off")
    f = p.add_argument_group("fast path")
    f.add_argument("--cache-frozen", action="store_true",
                   help="cache the last frozen layer's output (K views per training image) in the "
                        "feature cache and train only the unfrozen top on it")
    f.add_argument("--views", type=int, default=4, metavar="K",
                   help="views per training image with --cache-frozen; view 0 is un-augmented (default 4)")
    f.add_argument("--cache-dir", default=None, help="feature cache (default: $BNECK_CACHE or ~/.cache/bneck)")
    p.add_argument("--allow-untrained-head", action="store_true")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="backbone weights file, if not where it was at extraction (checked by sha256)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Fine-tune and print validation/test accuracy before and after; returns 0."""
    from .finetune import finetune

    augment = {"rotation": args.rotation, "shift": args.shift, "shear": args.shear,
               "zoom": args.zoom, "flip": not args.no_flip}
    if args.no_augment:
        augment = {k: (False if k == "flip" else 0.0) for k in augment}
    result = finetune(args.head_dir, args.data, args.out, unfreeze_from=args.unfreeze_from,
                      epochs=args.epochs, lr=args.lr, momentum=args.momentum,
                      optimizer=args.optimizer, batch_size=args.batch_size, augment=augment,
                      seed=args.seed, early_stopping=args.early_stopping,
                      allow_untrained_head=args.allow_untrained_head, weights=args.weights,
                      cache_frozen=args.cache_frozen, views=args.views, cache_dir=args.cache_dir,
                      verbose=not args.quiet)
    m = result.metrics
    before = m["before_finetuning"]["validation"]["accuracy"]
    if m["kept_epoch"]:
        print(f"validation accuracy: {100 * before:.1f}% with the frozen head -> "
              f"{100 * m['validation']['accuracy']:.1f}% fine-tuned (epoch {m['kept_epoch']} kept)")
    else:
        print(f"validation accuracy: no epoch beat the frozen head's {100 * before:.1f}%, so the "
              f"starting weights were kept. Try a lower --lr (now {args.lr:g}) or a later "
              "--unfreeze-from.")
    if "test" in m:
        print(f"test accuracy: {100 * m['test']['accuracy']:.1f}%")
    print(f"fine-tuned model: {result.folder} ({result.seconds:.0f} s)")
    return 0
