"""``bneck train``, ``bneck evaluate`` and ``bneck predict``: stage 2 from the command line."""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys

from features.atomic import atomic_open
from features.errors import ConfigError

from .heads import OPTIMIZERS
from .sklearn_models import RESHAPES
from .train import CLASSIFIERS, DEFAULTS


def parse_size(text: str) -> int:
    """Parse '512M', '2G', '1500K' or a byte count; raises ConfigError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ConfigError(f"--max-memory must be a size such as 512M, 2G or a byte count. "
                          f"Received: max_memory={text!r}.")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024 ** power)


def add_parsers(sub) -> None:
    """Register train, evaluate and predict."""
    p = sub.add_parser("train", help="train and compare classifiers on cached features",
                       description="Train classifiers on FEATURES_DIR/{train,validation,test}.h5, "
                                   "save each in MODELS_DIR/NAME and rank them.")
    p.add_argument("features_dir", metavar="FEATURES_DIR")
    p.add_argument("--classifier", required=True, metavar="NAME[,NAME...]",
                   help=f"any of: {', '.join(CLASSIFIERS)}")
    p.add_argument("--out", required=True, metavar="MODELS_DIR")
    g = p.add_argument_group("Keras heads (dense, gap-dense)")
    g.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    g.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    g.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    g.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=OPTIMIZERS)
    g.add_argument("--units", type=int, default=DEFAULTS["units"])
    g.add_argument("--dropout", type=float, default=DEFAULTS["dropout"])
    g.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better val_loss, restoring the best weights")
    g.add_argument("--class-weight", default=None, choices=["balanced"])
    s = p.add_argument_group("scikit-learn classifiers")
    s.add_argument("--reshape", default=DEFAULTS["reshape"], choices=RESHAPES,
                   help="turn the spatial grid into a vector (default avg)")
    s.add_argument("--pca", type=int, default=None, metavar="N")
    s.add_argument("--search", nargs="?", const="validation", default=None,
                   choices=["validation", "kfold"], help="tune a small grid (default on validation)")
    s.add_argument("--folds", type=int, default=DEFAULTS["folds"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="stream features from disk when they are larger than SIZE (e.g. 512M)")
    p.add_argument("--keep", default="all", choices=["all", "best"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run_train)

    e = sub.add_parser("evaluate", help="re-score a saved classifier on a feature file")
    e.add_argument("model_dir", metavar="MODEL_DIR")
    e.add_argument("feature_file", metavar="FEATURE_FILE")
    e.set_defaults(run=run_evaluate)

    q = sub.add_parser("predict", help="classify images with a saved classifier")
    q.add_argument("model_dir", metavar="MODEL_DIR")
    q.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    q.add_argument("--csv", default=None, metavar="FILE", help="also write the results here")
    q.add_argument("--weights", default=None, metavar="PATH",
                   help="backbone weights file, if not where it was at extraction (checked by sha256)")
    q.add_argument("--batch-size", type=int, default=32)
    q.set_defaults(run=run_predict)

    c = sub.add_parser("convert", help="rewrite a model folder of an older bneck in today's format",
                       description="Write MODEL_DIR (made by bneck before 0.2) in today's format, beside "
                                   "it: scikit-learn pickles become skops files, the manifest lists every "
                                   "file. The old folder is left as it is.")
    c.add_argument("model_dir", metavar="MODEL_DIR")
    c.add_argument("--out", default=None, metavar="NEW_DIR", help="default: MODEL_DIR-converted")
    c.add_argument("--trust-pickle", action="store_true",
                   help="load the folder's pickled model.joblib to convert it. Loading a pickle runs any "
                        "code it carries: pass this only for a folder from someone you trust")
    c.set_defaults(run=run_convert)


def run_train(args: argparse.Namespace) -> int:
    """Train, print the leaderboard; returns 0."""
    from .train import train

    board = train(args.features_dir, args.classifier.split(","), args.out, keep=args.keep,
                  max_memory=parse_size(args.max_memory) if args.max_memory else None,
                  verbose=not args.quiet, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, optimizer=args.optimizer, units=args.units, dropout=args.dropout,
                  early_stopping=args.early_stopping, class_weight=args.class_weight,
                  seed=args.seed, reshape=args.reshape, pca=args.pca, search=args.search,
                  folds=args.folds)
    print(board.table())
    print(f"\nbest: {board.best.name} -> {board.best.folder}\nleaderboard: {board.out_dir}/leaderboard.csv")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Print accuracy, loss, macro F1 and per-class metrics; returns 0."""
    from .predict import evaluate

    m = evaluate(args.model_dir, args.feature_file)
    print(f"{args.feature_file}: accuracy {100 * m['accuracy']:.2f}%  loss {m['loss']:.4f}  "
          f"macro F1 {m['macro_f1']:.4f}  ({m['n']} images)")
    rows = [[c, round(v["precision"], 3), round(v["recall"], 3), round(v["f1"], 3), v["support"]]
            for c, v in m["per_class"].items()]
    from features.progress import format_table

    print(format_table(["class", "precision", "recall", "f1", "support"], rows))
    print("confusion matrix (rows: true):", json.dumps(m["confusion_matrix"]))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print one line per image; returns 0 (bad images are reported, not fatal)."""
    from features.outputs import check_file

    from .predict import predict_images

    if args.csv:
        check_file(args.csv, "path,class,", "predictions CSV", inputs=[args.model_dir])
    rows = predict_images(args.model_dir, args.inputs, args.weights, args.batch_size)
    classes = next((list(r["probabilities"]) for r in rows if "probabilities" in r), [])
    for r in rows:
        if "error" in r:
            print(f"{r['path']}: error: {r['error']}", file=sys.stderr)
        else:
            probs = "  ".join(f"{c}={p:.4f}" for c, p in r["probabilities"].items())
            print(f"{r['path']}: {r['class']}  {probs}")
    if args.csv:
        with atomic_open(args.csv, newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "class", *classes, "error"])
            for r in rows:
                probs = [f"{r['probabilities'][c]:.6f}" for c in classes] if "probabilities" in r else [""] * len(classes)
                writer.writerow([r["path"], r.get("class", ""), *probs, r.get("error", "")])
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert an older model folder; returns 0."""
    from .legacy import convert

    out = convert(args.model_dir, args.out, args.trust_pickle)
    print(f"converted {args.model_dir} -> {out}")
    return 0
