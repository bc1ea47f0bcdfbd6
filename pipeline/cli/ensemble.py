"""``bneck ensemble``: a weighted ensemble of model folders, selected on validation."""

from __future__ import annotations

import argparse

from bneck.core.options import namespace_values
from bneck.pipeline.ensemble.options import ENSEMBLE

EPILOG = """examples:
  bneck ensemble runs/demo/models/svm runs/demo/models/logreg runs/demo/finetuned --out runs/demo/my-ensemble
  bneck predict runs/demo/my-ensemble new_images/

The members must be models of one extractor scored on the same validation and test images
(the models of one run). The folder refers to its members (checked by sha256 when loaded):
keep them where they are, or move the folders together."""


def add_parser(sub) -> None:
    """Register ``ensemble``."""
    p = sub.add_parser(
        "ensemble",
        help="combine model folders into a weighted ensemble, selected on validation",
        description="Greedy ensemble selection with replacement (Caruana et al. 2004) over the "
        "models' saved validation predictions: each round adds the model that makes the "
        "average best (validation accuracy, then log loss), and the best prefix of the rounds "
        "is kept, so the ensemble is never below the best single model on validation. Writes "
        "a model folder that predict, evaluate and export take like any other.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="classifier and fine-tuned model folders")
    p.add_argument("--out", required=True, metavar="ENSEMBLE_DIR", help="the folder to write")
    ENSEMBLE.add_arguments(p)
    p.add_argument("--quiet", action="store_true", help="print only the line that says what was chosen")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Select and write the ensemble, print what was chosen; returns 0."""
    from bneck.core.progress import format_table
    from bneck.pipeline.ensemble.build import make_ensemble, summary

    result = make_ensemble(args.model_dirs, args.out, verbose=False, **namespace_values(args, ENSEMBLE))
    if args.quiet:
        print(summary(result))
    else:
        weights = result.selection.weights
        rows = [
            [c.name, weights.get(c.name, 0), _percent(c.accuracy("validation")), _percent(c.accuracy("test"))]
            for c in sorted(result.candidates, key=lambda c: -weights.get(c.name, 0))
        ]
        rows.append(
            [
                "ensemble",
                sum(weights.values()),
                _percent(result.metrics["validation"]["accuracy"]),
                _percent((result.metrics.get("test") or {}).get("accuracy")),
            ]
        )
        print(format_table(["model", "weight", "val acc", "test acc"], rows))
        print(summary(result) + (" (unchanged: the folder already held it)" if result.reused else ""))
    return 0


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
