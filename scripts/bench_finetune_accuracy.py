"""Benchmark stage 3's accuracy: `bneck run` with its defaults, the best frozen model against the fine-tuned one.

For each (data, backbone) it runs the whole `bneck run` (extract, the default
classifiers, fine-tune, report) with nothing but the data, the backbone and, for a
single-root folder, the split, and prints one table: the best frozen classifier (by
validation accuracy) and its test accuracy, the fine-tuned model's test accuracy
(and with mirror test-time augmentation when the run scored it), the gain on the same
test images with its 95 % interval and McNemar's p, then the run's ensemble (selected on
validation) with its gain over the best single model, and the run's wall time. Test is
read once, after the run chose everything on validation; the whole leaderboard, with
intervals, is in OUT/NAME.json.

  python scripts/bench_finetune_accuracy.py [--only blood-mobilenetv2,...] [--out DIR]
Uses the real ImageNet weights in ../shared/data/weights (via $KERAS_HOME).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

CASES = {
    "cats-mobilenetv2": (SHARED / "cats_and_dogs_small", {"backbone": "mobilenetv2", "alpha": 0.5, "size": 224}),
    "cats-mobilenet": (SHARED / "cats_and_dogs_small", {"backbone": "mobilenet", "alpha": 0.25, "size": 224}),
    "blood-mobilenetv2": (
        SHARED / "blood_cells_small",
        {"backbone": "mobilenetv2", "alpha": 0.5, "size": 224, "split": [0.7, 0.15, 0.15], "seed": 0},
    ),
}


def keras_home(work: Path) -> str:
    """A KERAS_HOME whose models/ holds the shared official weight files (linked)."""
    models = work / "keras_home" / "models"
    models.mkdir(parents=True, exist_ok=True)
    for f in (SHARED / "weights").iterdir():
        if not (models / f.name).exists():
            os.symlink(f, models / f.name)
    return str(work / "keras_home")


def one(name: str, out: Path, cache: Path) -> list:
    from bneck import pipeline
    from bneck.pipeline.training.leaderboard import describe_accuracy

    data, extract = CASES[name]
    start = time.perf_counter()
    result = pipeline.run(
        None,
        base={
            "data": str(data),
            "out": str(out / name),
            "extract": {**extract, "weights": "imagenet", "cache_dir": str(cache)},
        },
        verbose=False,
    )
    wall = time.perf_counter() - start
    frozen = max(result.stages.train, key=lambda r: r.accuracy("validation"))
    rows = []
    for ft in (result.stages.finetune, result.stages.finetune_tta, result.stages.ensemble):
        if ft is None:
            continue
        g = ft.gain
        rows.append(
            [
                name,
                f"{frozen.name} {100 * frozen.accuracy('test'):.1f}",
                ft.name if ft.kind != "ensemble" else f"ensemble (gain vs {ft.versus or '-'})",
                f"{100 * ft.accuracy('test'):.1f}",
                f"{100 * g.gain:+.1f} [{100 * g.low:+.1f}, {100 * g.high:+.1f}]" if g else "-",
                f"{g.p_value:.2g}" if g else "-",
                f"{wall:.0f}",
            ]
        )
    with open(out / f"{name}.json", "w") as handle:
        json.dump(
            {
                "run": str(out / name),
                "rows": rows,
                "wall_seconds": wall,
                "finetune": result.stages.to_json()["finetune"],
                "ensemble": result.stages.to_json()["ensemble"],
                "leaderboard": [
                    {
                        "model": r.name,
                        "validation": describe_accuracy(r, "validation"),
                        "test": describe_accuracy(r, "test"),
                        "versus": r.versus,
                        "gain": r.gain.describe() if r.gain else "",
                    }
                    for r in result.leaderboard
                ],
            },
            handle,
            indent=1,
            default=str,
        )
    return rows


def main() -> None:
    from bneck.core.progress import format_table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    a = p.parse_args()
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(unknown)}; allowed: {', '.join(CASES)}")
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bneck-bench-acc-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["KERAS_HOME"] = keras_home(work)
    headers = [
        "data-backbone",
        "best frozen (val) test %",
        "fine-tuned / ensemble",
        "test %",
        "gain, points [95 %]",
        "McNemar p",
        "run s",
    ]
    rows = []
    try:
        for name in names:
            rows += one(name, work, work / "cache")
            print(format_table(headers, rows[-3:]), flush=True)
    finally:
        if not a.out:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(format_table(headers, rows))
    with open("/proc/cpuinfo") as handle:
        flags = set(next(line for line in handle if line.startswith("flags")).split())
    print("CPU flags:", " ".join(sorted(flags & {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"})))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
