"""Stage 3's options: one table for ``finetune()``, ``bneck finetune`` and ``[finetune]`` in a run's config."""

from __future__ import annotations

from bneck.core.errors import ConfigError
from bneck.core.options import Option, OptionTable
from bneck.features.views.rows import VIEW_PRECISIONS
from bneck.pipeline.training.fastfit import SCHEDULES
from bneck.pipeline.training.heads import OPTIMIZERS
from bneck.pipeline.training.options import MAX_EPOCHS

AUGMENTATIONS = ("rotation", "shift", "shear", "zoom", "flip")

FINETUNE = OptionTable(
    "finetune",
    [
        Option(
            "unfreeze_from",
            str,
            "default",
            "first trainable layer: `default` (measured per backbone: "
            "MobileNet/MobileNetV2 from their 14x14 stage, others their last "
            "block), `last-block` (the reference recipe's), `none` (frozen base) "
            "or a layer name",
            metavar="LAYER",
        ),
        Option("epochs", int, 12, "epochs", low=1, high=MAX_EPOCHS),
        Option("lr", float, 3e-4, "(peak) learning rate", low=0, open_low=True, high=10),
        Option("momentum", float, 0.9, "SGD momentum", low=0, high=1, open_high=True),
        Option(
            "optimizer",
            str,
            "adam",
            "optimizer (the reference recipe: `sgd` with momentum, --lr 1e-4, --schedule constant)",
            choices=OPTIMIZERS,
        ),
        Option(
            "schedule",
            str,
            "cosine",
            "learning-rate schedule after the warm-up: `constant` or `cosine` (down to 0 at the last epoch)",
            choices=SCHEDULES,
        ),
        Option(
            "warmup",
            float,
            0.1,
            "linear learning-rate warm-up, a fraction of all steps",
            low=0,
            high=1,
            metavar="FRACTION",
        ),
        Option("label_smoothing", float, 0.1, "label smoothing of the training targets", low=0, high=1, open_high=True),
        Option("batch_size", int, 16, "batch size", low=1, high=4096),
        Option(
            "early_stopping",
            int,
            0,
            "stop after this many epochs without a better validation accuracy (0: off)",
            low=0,
            high=MAX_EPOCHS,
            metavar="PATIENCE",
        ),
        Option("seed", int, 0, "seed of augmentation, views, shuffling and dropout", low=0, high=2**32 - 1),
        Option(
            "rotation",
            float,
            40.0,
            "augmentation: rotation range in degrees (0: off)",
            low=0,
            high=360,
            metavar="DEGREES",
        ),
        Option("shift", float, 0.2, "augmentation: shift range, a fraction of the size (0: off)", low=0, high=1),
        Option("shear", float, 0.2, "augmentation: shear range (0: off)", low=0, high=1),
        Option("zoom", float, 0.2, "augmentation: zoom range (0: off)", low=0, high=1, open_high=True),
        Option("flip", bool, True, "augmentation: horizontal flips"),
        Option(
            "cache_frozen",
            bool,
            True,
            "compute the frozen part once per image and view into the feature "
            "cache and train only the unfrozen top (--no-cache-frozen: the "
            "whole model on every epoch)",
        ),
        Option(
            "views",
            int,
            4,
            "with --cache-frozen: views per training image; view 0 is the image itself (so 1 means no augmentation)",
            high=64,
            low=1,
            metavar="K",
        ),
        Option(
            "view_precision",
            str,
            "float32",
            "with --cache-frozen: how cached views are stored: float32 (exact), bfloat16 (8 significant "
            "bits: 0.37 of the disk) or e8m5 (6 significant bits: 0.31); validation and test are still "
            "scored on the images in float32",
            choices=VIEW_PRECISIONS,
        ),
        Option(
            "tta",
            bool,
            False,
            "test-time augmentation: also score the mean of each validation and test "
            "image's probabilities and its mirror image's (a separate leaderboard row)",
        ),
        Option("cache_dir", str, None, "the feature cache (default $BNECK_CACHE or ~/.cache/bneck)", metavar="DIR"),
        Option(
            "weights",
            str,
            None,
            "backbone weights file, if not where it was at extraction (checked by sha256)",
            metavar="PATH",
        ),
        Option("allow_untrained_head", bool, False, "fine-tune a head that was never trained (not advised)"),
        Option(
            "retrain",
            bool,
            False,
            "fine-tune even when the output folder already holds this head fine-tuned "
            "on the same data with the same options (by default it is reused)",
        ),
    ],
)
NO_AUGMENT = {"rotation": 0.0, "shift": 0.0, "shear": 0.0, "zoom": 0.0, "flip": False}


def augmentation_params(augment: dict, defaults: bool = True) -> dict:
    """Return the augmentation settings of ``augment``, the others at their defaults (unless not ``defaults``).

    ``augment`` keys: rotation (degrees), shift, shear, zoom (fractions), flip (bool);
    0/False switches one off. Raises ConfigError for unknown keys or bad values.
    """
    unknown = sorted(set(augment) - set(AUGMENTATIONS))
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {', '.join(unknown)}; allowed: {', '.join(AUGMENTATIONS)}.")
    checked = {k: FINETUNE[k].check(v, f"augmentation {k}") for k, v in augment.items()}
    return {**({k: FINETUNE[k].default for k in AUGMENTATIONS} if defaults else {}), **checked}


def fold_augment(arguments: dict) -> dict:
    """Return ``finetune()``'s arguments with its ``augment`` dict folded in: each setting the dict gives,
    checked by ``augmentation_params`` (its messages), replaces the one given one by one (the dict wins)."""
    return {**arguments, **augmentation_params(arguments.get("augment") or {}, defaults=False)}


def fingerprint(opts: dict) -> dict:
    """Return what decides a fine-tuned model among checked options (``FINETUNE.check``'s output):
    everything but where things are (cache folder, weights path) and ``retrain``; the augmentation as
    one table."""
    out = {k: v for k, v in opts.items() if k not in AUGMENTATIONS + ("cache_dir", "weights", "retrain")}
    out["augment"] = {k: opts[k] for k in AUGMENTATIONS}
    return out


def check_view_precision(opts: dict) -> None:
    """Refuse a view precision without cached views, before any work (it would change nothing)."""
    if not opts["cache_frozen"] and opts["view_precision"] != "float32":
        raise ConfigError(
            f"--view-precision says how --cache-frozen stores its cached views, and nothing is cached "
            f"when --cache-frozen is off. Leave --view-precision at float32, or turn --cache-frozen on. "
            f"Received: view_precision={opts['view_precision']!r}, cache_frozen=False."
        )
