"""``bneck train``, ``bneck evaluate`` and ``bneck predict``: stage 2 from the command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from bneck.core.atomic import atomic_open
from bneck.core.csvcells import shown, text_cell
from bneck.core.errors import ConfigError
from bneck.core.options import namespace_values
from bneck.pipeline.training.options import CLASSIFIERS, TRAIN


def add_parsers(sub) -> None:
    """Register train, evaluate and predict."""
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_predict_parser(sub)
    _add_convert_parser(sub)


def _add_train_parser(sub) -> None:
    """Register ``bneck train``."""
    p = sub.add_parser(
        "train",
        help="train and compare classifiers on cached features",
        description="Train classifiers on FEATURES_DIR/{train,validation,test}.h5, "
        "save each in MODELS_DIR/NAME and rank them.",
    )
    p.add_argument("features_dir", metavar="FEATURES_DIR")
    p.add_argument(
        "--classifier",
        required=True,
        action="append",  # given twice, both count (`--classifier logreg --classifier knn`)
        metavar="NAME[,NAME...]",
        help=f"any of: {', '.join(CLASSIFIERS)} (the registered classifiers); repeat it or separate names by commas",
    )
    p.add_argument("--out", required=True, metavar="MODELS_DIR")
    TRAIN.add_arguments(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run_train)


def _add_evaluate_parser(sub) -> None:
    """Register ``bneck evaluate``."""
    e = sub.add_parser(
        "evaluate",
        help="re-score a saved classifier on a feature file",
        description="Score a classifier folder from `bneck train` (or an ensemble of them from `bneck "
        "ensemble`) on any split file of the same extractor. Fine-tuned models, and ensembles holding "
        "one, take images: use `bneck predict`.",
    )
    e.add_argument("model_dir", metavar="MODEL_DIR", help="a classifier folder, or an ensemble of classifiers")
    e.add_argument("feature_file", metavar="FEATURE_FILE")
    e.set_defaults(run=run_evaluate)


def _add_predict_parser(sub) -> None:
    """Register ``bneck predict``."""
    q = sub.add_parser(
        "predict",
        help="classify images with a saved classifier",
        description="Classify images (files, or folders read recursively) with a model folder "
        "from `bneck train`, `bneck finetune`, `bneck ensemble` or `bneck run`. One line per image, in "
        "the order given, then a summary; a bad image is reported in its line.",
        epilog="examples:\n  bneck predict runs/demo/finetuned photos/ --top-k 1\n"
        "  bneck predict runs/demo/models/logreg cat.jpg --json > out.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("model_dir", metavar="MODEL_DIR", help="a classifier, fine-tuned or ensemble model folder")
    q.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    q.add_argument("--csv", default=None, metavar="FILE", help="also write the results here")
    q.add_argument(
        "--top-k",
        type=int,
        default=None,
        metavar="K",
        help="show only the K most probable classes per image (default: all)",
    )
    q.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    q.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="backbone weights file, if not where it was at extraction (checked by sha256)",
    )
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument(
        "--runtime",
        default="auto",
        metavar="auto|tensorflow|openvino",
        help="what computes the features: auto (default) takes OpenVINO when this extractor's converted "
        "model is cached and was checked against TensorFlow on this CPU, else TensorFlow",
    )
    q.set_defaults(run=run_predict)


def _add_convert_parser(sub) -> None:
    """Register ``bneck convert``."""
    c = sub.add_parser(
        "convert",
        help="rewrite a model folder of an older bneck in today's format",
        description="Write MODEL_DIR (made by bneck before 0.2) in today's format, beside "
        "it: scikit-learn pickles become skops files, the manifest lists every "
        "file. The old folder is left as it is.",
    )
    c.add_argument("model_dir", metavar="MODEL_DIR")
    c.add_argument("--out", default=None, metavar="NEW_DIR", help="default: MODEL_DIR-converted")
    c.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load the folder's pickled model.joblib to convert it. Loading a pickle runs any "
        "code it carries: pass this only for a folder from someone you trust",
    )
    c.set_defaults(run=run_convert)


def run_train(args: argparse.Namespace) -> int:
    """Train, print the leaderboard; returns 0."""
    from bneck.pipeline.training.stage import train

    board = train(
        args.features_dir,
        ",".join(args.classifier).split(","),
        args.out,
        verbose=not args.quiet,
        **namespace_values(args, TRAIN),
    )
    print(board.table())
    for r in board.results:
        print(f"{r.name}: {'reused, unchanged (--retrain to train it again)' if r.reused else 'trained: ' + r.why}")
    print(f"\nbest: {board.best.name} -> {board.best.folder}\nleaderboard: {board.out_dir}/leaderboard.csv")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Print accuracy, loss, macro F1 and per-class metrics; returns 0."""
    from bneck.pipeline.predict import evaluate

    m = evaluate(args.model_dir, args.feature_file)
    print(
        f"{args.feature_file}: accuracy {100 * m['accuracy']:.2f}%  loss {m['loss']:.4f}  "
        f"macro F1 {m['macro_f1']:.4f}  ({m['n']} images)"
    )
    if m["training_images"]:
        print(
            f"note: {m['training_images']} of these {m['n']} images were used to train this model, "
            "so this is not a held-out score."
        )
    rows = [
        [c, round(v["precision"], 3), round(v["recall"], 3), round(v["f1"], 3), v["support"]]
        for c, v in m["per_class"].items()
    ]
    from bneck.core.progress import format_table

    print(format_table(["class", "precision", "recall", "f1", "support"], rows))
    print("confusion matrix (rows: true):", json.dumps(m["confusion_matrix"]))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print one line per image; returns 0 when every image was classified, 1 when any input failed."""
    from bneck.core.folders import check_file
    from bneck.pipeline.predict import classify

    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be a whole number of classes, 1 or more. Received: top_k={args.top_k!r}.")
    if args.csv:
        check_file(args.csv, _is_predictions_header, "predictions CSV", inputs=[args.model_dir])
    info: dict = {}
    classes, rows = classify(args.model_dir, args.inputs, args.weights, args.batch_size, args.runtime, info)
    if info:
        print(f"runtime: {info['runtime']} ({info['why']})", file=sys.stderr)
        print(f"domain: {info['domain']}", file=sys.stderr)
    if args.csv:  # first: a reader of the lines that leaves (`| head`) never costs the file
        _write_csv(args.csv, classes, rows)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model_dir,
                    "classes": classes,
                    "predictions": [_top(r, args.top_k) for r in rows],
                    "summary": _summary(rows),
                },
                indent=1,
            )
        )
    else:
        _print_rows(rows, args.top_k)
    failed = sum("error" in r for r in rows)
    if failed:
        print(
            f"{failed} of {len(rows)} input(s) could not be classified (listed above"
            f"{' and in the CSV' if args.csv else ''}).",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _write_csv(path: str, classes: list[str], rows: list[dict]) -> None:
    """One row per input; every text cell safe to open in a spreadsheet (``bneck.core.csvcells``), file
    names kept byte for byte (undecodable bytes written as they are)."""
    with atomic_open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow([text_cell(c) for c in ["path", "class", *classes, "seen_in", "out_of_domain", "error"]])
        for r in rows:
            probs = [f"{r['probabilities'][c]:.6f}" for c in classes] if "probabilities" in r else [""] * len(classes)
            flag = {True: "true", False: "false"}.get(r.get("out_of_domain"), "")
            text = [r["path"], r.get("class", "")]
            writer.writerow(
                [*map(text_cell, text), *probs, r.get("seen_in") or "", flag, text_cell(r.get("error", ""))]
            )


def _top(row: dict, k) -> dict:
    """The row with only its ``k`` most probable classes (all when ``k`` is None), most probable first."""
    if "probabilities" not in row:
        return row
    ranked = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])
    return {**row, "probabilities": dict(ranked[:k] if k else ranked)}


def _summary(rows: list[dict]) -> dict:
    counts: dict = {}
    for r in rows:
        if "class" in r:
            counts[r["class"]] = counts.get(r["class"], 0) + 1
    return {
        "images": len(rows),
        "classified": sum(counts.values()),
        "failed": sum("error" in r for r in rows),
        "per_class": counts,
        "seen_in_model_splits": sum(bool(r.get("seen_in")) for r in rows),
        "out_of_domain": sum(bool(r.get("out_of_domain")) for r in rows),
    }


def _print_rows(rows: list[dict], k) -> None:
    for r in rows:  # names shown so that none can pass for another line (bneck.core.csvcells.shown)
        if "error" in r:
            print(f"{shown(r['path'])}: error: {r['error']}", file=sys.stderr)
        else:
            probs = "  ".join(f"{shown(c)}={p:.4f}" for c, p in _top(r, k)["probabilities"].items())
            seen = f"  (one of the model's {r['seen_in']} images)" if r["seen_in"] else ""
            unlike = "  [OUT OF DOMAIN: unlike the model's images]" if r.get("out_of_domain") else ""
            print(f"{shown(r['path'])}: {shown(r['class'])}  {probs}{seen}{unlike}")
    s = _summary(rows)
    per_class = ", ".join(f"{shown(c)} {n}" for c, n in sorted(s["per_class"].items(), key=lambda kv: -kv[1]))
    print(
        f"{s['classified']} of {s['images']} image(s) classified"
        + (f": {per_class}" if per_class else "")
        + (f"; {s['failed']} failed" if s["failed"] else "")
        + (f"; {s['seen_in_model_splits']} were the model's own images" if s["seen_in_model_splits"] else "")
        + (
            f"; {s['out_of_domain']} out of domain (unlike the model's validation images: check them before "
            "trusting their class)"
            if s["out_of_domain"]
            else ""
        )
    )


def _is_predictions_header(head: str) -> bool:
    """True when the first record of ``head`` (a file's first 64 KB) is the header ``bneck predict --csv``
    writes: path, class, the classes (any names, line breaks included), seen_in, out_of_domain (absent
    from files older bnecks wrote), error."""
    try:
        cells = next(csv.reader(io.StringIO(head, newline="")), [])
    except csv.Error:
        return False
    ending = cells[-3:] == ["seen_in", "out_of_domain", "error"] or cells[-2:] == ["seen_in", "error"]
    return len(cells) >= 5 and cells[:2] == ["path", "class"] and ending


def run_convert(args: argparse.Namespace) -> int:
    """Convert an older model folder; returns 0."""
    from bneck.pipeline.legacy import convert

    out = convert(args.model_dir, args.out, args.trust_pickle)
    print(f"converted {args.model_dir} -> {out}")
    return 0
