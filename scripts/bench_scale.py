"""The cost curve: extract, train and fine-tune at 1,000, 10,000 and 100,000 distinct images.

For each size, on distinct JPEGs made from the reference split (``scale_images.py``: crops, flips,
small colour changes, every file hashing differently), each stage runs as its own ``bneck``
process, timed whole, its peak resident memory read from the kernel (``ru_maxrss`` of the
process and its children), and the disk it leaves measured:

* ``bneck extract`` (MobileNet alpha 0.25, its defaults): seconds per image, peak memory, the
  cache's and the feature files' size;
* ``bneck train --classifier logreg,gap-dense`` (``--epochs`` of this script): time, peak memory,
  and whether bneck chose to stream the features from disk;
* ``bneck finetune --cache-frozen`` of the gap-dense head: seconds per epoch (the epochs after the
  first, which also builds the views), peak memory, the views' size in the cache.

Then it prints the table and, between the two largest sizes, how each per-image cost and each
peak changed (the goal: within 20 %).

  python scripts/bench_scale.py [--sizes 1000,10000,100000] [--work /tmp/bneck-scale] [--json FILE]
  python scripts/bench_scale.py --stages train --json FILE   # measure training again, keep the rest
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_finetune_accuracy import keras_home  # noqa: E402
from scale_images import make  # noqa: E402

from bneck.core.progress import format_table  # noqa: E402

BACKBONE = ["--backbone", "mobilenet", "--alpha", "0.25", "--weights", "imagenet"]
# Runs a command and prints the peak resident memory (KiB) of it and its children, as the kernel counts it.
PEAK = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def measured(command: list[str], env: dict, log: Path) -> dict:
    """Run ``bneck COMMAND`` as its own process: {seconds, peak_mb}; its output (both streams) goes to ``log``."""
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, "-c", PEAK, sys.executable, "-m", "bneck", *command],
            env=env, stdout=out, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    with open(log, "a") as out:  # what bneck said on stderr (its notes), the peak line aside
        out.write("\n".join(lines[:-1]) + "\n")
    if done.returncode != 0:
        raise SystemExit(f"bneck {' '.join(command)} failed ({done.returncode}):\n" + "\n".join(lines[-20:]))
    return {"seconds": seconds, "peak_mb": int(lines[-1]) / 1024}


def megabytes(folder: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file() and not p.is_symlink()) / 2**20


def one_size(n: int, work: Path, images: Path, args, env: dict, row: dict) -> dict:
    """The stages ``args.stages`` at ``n`` images into ``work`` (the script's own folder: emptied first, so the
    cache is cold and nothing is reused), updating ``row``; a stage left out keeps ``row``'s figures."""
    cache, features, models, tuned = work / "cache", work / "features", work / "models", work / "finetuned"
    row["images"] = n
    if "extract" in args.stages:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        ex = measured(
            ["extract", str(images), "--out", str(features), "--cache-dir", str(cache), "--quiet", *BACKBONE],
            env, work / "extract.log",
        )  # fmt: skip
        row.update(extract_s=ex["seconds"], extract_peak_mb=ex["peak_mb"], runtime=runtime_of(work / "extract.log"))
        row.update(cache_mb=megabytes(cache), features_mb=megabytes(features, "*.h5"))
    if "train" in args.stages:
        shutil.rmtree(models, ignore_errors=True)  # else train reuses the folders
        tr = measured(
            ["train", str(features), "--classifier", "logreg,gap-dense", "--out", str(models), "--epochs",
             str(args.epochs)],
            env, work / "train.log",
        )  # fmt: skip
        row.update(train_s=tr["seconds"], train_peak_mb=tr["peak_mb"], streamed=streamed_models(models))
    if "finetune" in args.stages:
        shutil.rmtree(tuned, ignore_errors=True)
        views_before = megabytes(cache)
        ft = measured(
            ["finetune", str(models / "gap-dense"), "--out", str(tuned), "--cache-dir", str(cache), "--cache-frozen",
             "--views", "2", "--view-precision", "bfloat16", "--epochs", str(args.finetune_epochs)],
            env, work / "finetune.log",
        )  # fmt: skip
        row.update(finetune_s=ft["seconds"], finetune_peak_mb=ft["peak_mb"])
        if (views := megabytes(cache) - views_before) > 1 or "views_mb" not in row:  # 0 when cached before
            row["views_mb"] = views
        row["epoch_s"] = epoch_seconds(tuned, ft["seconds"], args.finetune_epochs)
    return row


def streamed_models(models: Path) -> list[str]:
    """The classifiers bneck chose to train streamed from disk, from their manifests."""
    found = []
    for manifest in sorted(models.glob("*/manifest.json")):
        if json.loads(manifest.read_text()).get("streamed"):
            found.append(manifest.parent.name)
    return found


def runtime_of(log: Path) -> str:
    """The runtime ``--runtime auto`` chose, from extract's own summary line."""
    for line in log.read_text().splitlines():
        if line.startswith("runtime: "):
            return line.split()[1]
    return "?"


def epoch_seconds(tuned: Path, total: float, epochs: int) -> float:
    """Seconds per training epoch, from the fine-tune's metrics.json (the epochs after the first, which
    also traces the graph; the views are built before any epoch), else the whole run's share."""
    times = json.loads((tuned / "metrics.json").read_text()).get("epoch_seconds") or []
    if len(times) > 1:
        return sum(times[1:]) / len(times[1:])
    return times[0] if times else total / max(1, epochs)


def table(rows: list[dict]) -> str:
    headers = ["images", "runtime", "extract ms/img", "extract peak MB", "cache MB", "features MB", "train s",
               "train ms/img", "train peak MB", "streamed", "finetune s/epoch", "ms/img/epoch",
               "finetune peak MB", "views MB"]  # fmt: skip

    def cell(r: dict, key: str, spec: str, per_image: bool = False) -> str:
        if key not in r:
            return "-"  # not measured (yet)
        value = 1000 * r[key] / r["images"] if per_image else r[key]
        return format(value, spec)

    body = [
        [f"{r['images']:,}", r.get("runtime", "?"), cell(r, "extract_s", ".2f", True),
         cell(r, "extract_peak_mb", ",.0f"), cell(r, "cache_mb", ",.0f"), cell(r, "features_mb", ",.0f"),
         cell(r, "train_s", ".0f"),
         cell(r, "train_s", ".2f", True), cell(r, "train_peak_mb", ",.0f"), ",".join(r.get("streamed", [])) or "none",
         cell(r, "epoch_s", ".0f"), cell(r, "epoch_s", ".2f", True), cell(r, "finetune_peak_mb", ",.0f"),
         cell(r, "views_mb", ",.0f")]
        for r in rows
    ]  # fmt: skip
    return format_table(headers, body)


def flatness(rows: list[dict]) -> str:
    """How each per-image cost and each peak changed between the two largest sizes."""
    if len(rows) < 2:
        return ""
    a, b = rows[-2], rows[-1]
    keys = [k for k in ("extract_s", "train_s", "epoch_s", "cache_mb") if k in a and k in b]
    per_image = {k: (a[k] / a["images"], b[k] / b["images"]) for k in keys}
    peaks = {k: (a[k], b[k]) for k in ("extract_peak_mb", "train_peak_mb", "finetune_peak_mb") if k in a and k in b}
    parts = [f"{k} per image x{y / x:.2f}" for k, (x, y) in per_image.items() if x]
    parts += [f"{k} x{y / x:.2f}" for k, (x, y) in peaks.items() if x]
    return f"{a['images']:,} -> {b['images']:,} images: " + ", ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bneck-scale"))
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the gap-dense head")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows here (with --stages, update the rows it holds)")
    parser.add_argument("--stages", default="extract,train,finetune", help="measure only these (the rest from --json)")
    args = parser.parse_args(argv)
    args.stages = set(args.stages.split(","))
    earlier = {}
    if args.stages != {"extract", "train", "finetune"} and args.json and args.json.is_file():
        earlier = {r["images"]: r for r in json.loads(args.json.read_text())}
    sizes = sorted(int(s) for s in args.sizes.split(","))
    env = dict(os.environ, KERAS_HOME=keras_home(args.work), PYTHONPATH=str(ROOT))
    rows = []
    for n in sizes:
        images = args.work / "images" / str(n)
        larger = [args.work / "images" / str(m) for m in sizes if m > n]
        make(n, images, like=larger[-1] if larger and larger[-1].is_dir() else None)
        rows.append(one_size(n, args.work / "runs" / str(n), images, args, env, dict(earlier.get(n, {}))))
        print(f"\n{n:,} images:\n" + table(rows[-1:]), flush=True)
        if args.json:  # after each size: a stopped run keeps what it measured
            args.json.write_text(json.dumps(rows + [r for m, r in earlier.items() if m not in sizes], indent=1))
    print("\nall sizes (ms/img: the stage's whole process, start-up included, per image):\n" + table(rows))
    if note := flatness(rows):
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
