"""What each keras.applications family does on this CPU: extraction against plain Keras, OpenVINO fp32,
`--runtime auto`, the int8 and bf16 gates, and images per second per runtime.

    .venv/bin/python scripts/family_runtimes.py                 # the smallest model of each family
    .venv/bin/python scripts/family_runtimes.py convnexttiny    # or the ones named
    .venv/bin/python scripts/family_runtimes.py --json out.json

Each backbone runs at its default size with seeded random weights written to a ``.weights.h5``
file (the real ImageNet files exist here for MobileNet v1 0.25 and MobileNetV2 0.5/0.35 only, and
equality, conversion and gates are what this measures, not accuracy), on the first ``--images``
training images of each class of ``../shared/data/cats_and_dogs_small`` (int8 calibrates on them
and both gates check on held-back ones; the gates run with the real weights of ``REAL_WEIGHTS``).
Every row is a fresh cache, so nothing is reused between columns. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BNECK_SHARED", ROOT.parent / "shared"))


def _data(folder: Path, per_class: int) -> Path:
    """A train/validation split holding the first ``per_class`` images of each class (validation: 4)."""
    source = SHARED / "data" / "cats_and_dogs_small"
    for split, count in (("train", per_class), ("validation", 4)):
        for cls in ("cats", "dogs"):
            (folder / split / cls).mkdir(parents=True)
            for name in sorted(os.listdir(source / split / cls))[:count]:
                shutil.copy(source / split / cls / name, folder / split / cls / name)
    return folder


# The ImageNet weights that exist here (../shared/data/weights, added to bneck's weights folder by setup).
REAL_WEIGHTS = (("mobilenet", 0.25), ("mobilenetv2", 0.5))


def _extract(data: Path, work: Path, tag: str, **options):
    """Extract into a fresh folder and cache; returns (report, train features) or (None, the refusal)."""
    from bneck import BneckError, extract, read_features

    try:
        report = extract(data, work / tag, cache_dir=work / f"cache-{tag}", splits=["train"], verbose=False, **options)
    except BneckError as exc:
        return None, str(exc).split(". ")[0]
    return report, read_features(work / tag / "train.h5").features


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) or 1.0))


def _gate(data: Path, work: Path, precision: str, options: dict) -> str:
    report, got = _extract(data, work, precision, runtime="openvino", precision=precision, **options)
    if report is None:
        return f"refused: {got}"
    stats = report.quantization or {}
    return f"cosine min {stats.get('cosine_min', float('nan')):.4f}: {'passes' if stats.get('passed') else 'fails'}"


def gate_row(name: str, alpha: float, data: Path, work: Path) -> dict:
    """The int8 and bf16 gates with the real ImageNet weights (random weights make them meaningless:
    Keras' random init with unit batch-norm statistics gives features near zero)."""
    options = dict(backbone=name, alpha=alpha, weights="imagenet", pool="avg")  # the default calibration
    return {"name": f"{name} {alpha} (ImageNet weights)", "int8": _gate(data, work, "int8", options)} | {
        "bf16": _gate(data, work, "bf16", options)
    }


def family_row(name: str, data: Path, work: Path) -> dict:
    """Every column of the table for backbone ``name`` but the gates (``gate_row``)."""
    from bneck.features.backbones.registry import get_backbone
    from bneck.pipeline.cli.backbones import measure

    entry = get_backbone(name)
    size = entry.default_size
    paths = sorted(str(p.relative_to(data)) for p in (data / "train").rglob("*.jpg"))
    weights = work / f"{name}.weights.h5"
    from tests.generated import keras_reference_features  # the same reference as the tests'

    want = keras_reference_features(name, size, weights, data, paths)
    options = dict(backbone=name, size=size, weights=str(weights), pool="avg")
    row: dict = {"name": name, "size": size}
    _, tf_rows = _extract(data, work, "tensorflow", runtime="tensorflow", **options)
    row["keras_max_relative_difference"] = _relative(tf_rows, want)
    report, ov_rows = _extract(data, work, "openvino", runtime="openvino", **options)
    row["openvino"] = f"refused: {ov_rows}" if report is None else f"equal (max rel. {_relative(ov_rows, tf_rows):.1e})"
    report, _ = _extract(data, work, "auto", runtime="auto", **options)
    row["auto"] = "refused" if report is None else f"{report.runtime}: {report.runtime_why}"
    for runtime in ("tensorflow", "openvino"):
        try:
            row[f"{runtime}_images_per_second"] = round(measure(name, runtime), 1)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this backbone is a result
            row[f"{runtime}_images_per_second"] = f"no: {str(exc).split('. ')[0]}"
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="backbones (default: the smallest of each family)")
    parser.add_argument(
        "--images",
        type=int,
        default=24,
        help="training images per class (default 24; the gates' default "
        "calibration takes 300 and checks on 64 more: give 200 for them)",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--only", choices=("families", "gates"), default=None, help="only the family table, or only the gates"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bneck.pipeline.cli.backbones import smallest_of_each_family

    names = args.names or smallest_of_each_family()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bneck-families-") as tmp:
        data = _data(Path(tmp) / "data", args.images)
        for name in names if args.only != "gates" else []:
            work = Path(tmp) / name
            work.mkdir()
            rows.append(family_row(name, data, work))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            shutil.rmtree(work)
        gates = []
        for name, alpha in REAL_WEIGHTS if args.only != "families" else []:
            work = Path(tmp) / f"{name}-{alpha}"
            work.mkdir()
            gates.append(gate_row(name, alpha, data, work))
            print(json.dumps(gates[-1]), file=sys.stderr, flush=True)
    for table in (t for t in (rows, gates) if t):
        columns = list(table[0])
        print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in table:
            cells = [f"{row[c]:.1e}" if "difference" in c else str(row[c]) for c in columns]
            print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"families": rows, "gates": gates}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
