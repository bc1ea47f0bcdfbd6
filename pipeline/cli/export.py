"""``bneck export``: one deployable model from a model folder."""

from __future__ import annotations

import argparse

from bneck.pipeline.export.formats import list_formats

EPILOG = """examples:
  bneck export runs/demo/models/logreg --out deploy/cats-logreg --format keras
  bneck export runs/demo/finetuned --out deploy/cats-onnx --format onnx

what works: Keras heads (dense, gap-dense), fine-tuned models, the scikit-learn
models that are exactly layers (logreg, linear-svm, mlp), and ensembles of those (one
graph); kernel svm, knn and the tree ensembles are refused. README "Export and serve" shows each format served."""


def add_parser(sub) -> None:
    """Register ``export``."""
    p = sub.add_parser(
        "export",
        help="write one model a service can load without bneck",
        description="Write the model in MODEL_DIR as one model that takes raw uint8 RGB "
        "images of the recorded size and returns class probabilities "
        "(preprocessing, base, pooling and head inside), with labels.json and "
        "bneck-export.json. The written model is loaded by its format's own "
        "runtime and must reproduce `bneck predict` within 1e-4 before it is kept.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a classifier, fine-tuned or ensemble model folder")
    p.add_argument("--out", required=True, metavar="EXPORT_DIR", help="the folder to write (new, or an earlier export)")
    # No argparse `choices`: export_model's ConfigError names the closest format and the install
    # command of one whose runtime is missing; help and completion list the registry as it is now.
    fmt = p.add_argument(
        "--format", default="keras", metavar="FORMAT", help=f"one of: {', '.join(list_formats())} (default: keras)"
    )
    fmt.completer = lambda **_: list_formats()  # argcomplete: the formats, not file names
    p.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="backbone weights file, if not where it was at extraction (checked by sha256)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export; returns 0."""
    from bneck.pipeline.export import export_model, summary

    metadata = export_model(args.model_dir, args.out, args.format, args.weights, verbose=False)
    if not args.quiet:
        print(summary(args.model_dir, args.out, metadata))
    return 0
