"""Benchmark disk: what a run's feature files and fine-tuning views take, and what storing views
rounded (``--view-precision e8m5`` or ``bfloat16``) costs in accuracy, on the same test images.

For each case (the reference MobileNetV2-0.5 runs of `bench_finetune_accuracy`), it runs
`bneck run` with its defaults (exact float32 views, every row compressed losslessly), then, for
every seed, fine-tunes the same head again with views at float32 and at each rounded precision
(each precision its own cache), and prints:

* disk: the run folder and its feature files against what they would take uncompressed
  (the bytes their datasets declare: how bneck stored them before), the fine-tuning views
  at each precision against float32 (the same views, every seed's);
* accuracy: rounded against float32 on the same test images with the same seed, per seed and
  every seed's images pooled (the difference with its 95 % interval, McNemar's p, the images
  one got right and the other wrong); and float32 against float32 with another seed: what a
  seed alone moves.

  python scripts/bench_storage.py [--only cats-mobilenetv2,blood-mobilenetv2] [--precisions e8m5]
                                  [--seeds 0,1,2] [--out DIR]
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

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_finetune_accuracy import CASES, keras_home  # noqa: E402

HEADERS = ["case", "what", "on disk MB", "uncompressed / float32 MB", "share"]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def declared_bytes(folder: Path) -> tuple[int, int]:
    """Return (bytes on disk, bytes the datasets declare) of the HDF5 files under ``folder``."""
    on_disk = declared = 0
    for path in folder.rglob("*.h5"):
        on_disk += path.stat().st_size
        with h5py.File(path, "r") as f:
            stored = sum(ds.id.get_storage_size() for ds in _datasets(f))
            full = sum(ds.size * ds.dtype.itemsize for ds in _datasets(f) if ds.dtype.kind != "O")
        declared += path.stat().st_size - stored + full
    return on_disk, declared


def _datasets(f: h5py.File) -> list:
    found = []
    f.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) and obj.dtype.kind != "O" else None)
    return found


def view_bytes(cache: Path, layer: str) -> int:
    """Bytes of the cache entries at ``layer``: the fine-tuning views (the runs' features are at
    another layer, their backbone's default)."""
    total = 0
    for meta in (cache / "features").glob("*/meta.json"):
        if json.loads(meta.read_text()).get("layer") == layer:
            total += folder_bytes(meta.parent)
    return total


def refinetune(run: Path, data: Path, out: Path, cache: Path, precision: str, seed: int) -> float:
    """Fine-tune the run's head again with the run's options, its views stored at ``precision`` and
    made with ``seed``; returns the seconds it took."""
    from bneck.pipeline.finetuning.options import FINETUNE
    from bneck.pipeline.finetuning.stage import finetune

    manifest = json.loads((run / "finetuned" / "manifest.json").read_text())
    config = {k: v for k, v in manifest["config"].items() if k in FINETUNE.options and k != "augment"}
    config.update(manifest["config"]["augment"])
    config.update(view_precision=precision, seed=seed)
    start = time.perf_counter()
    finetune(manifest["head"]["folder"], str(data), str(out), **config, cache_dir=str(cache), verbose=False)
    return time.perf_counter() - start


def right_on_test(folder: Path) -> dict:
    """{test image path: whether the model in ``folder`` got it right}."""
    from bneck.pipeline.artifacts import read_verified
    from bneck.pipeline.predictions_csv import read_predictions

    rows = read_predictions(read_verified(str(folder)).files["predictions.csv"].decode())
    best = {r["path"]: max(r["probabilities"], key=r["probabilities"].get) for r in rows if r["split"] == "test"}
    return {r["path"]: best[r["path"]] == r["true"] for r in rows if r["split"] == "test"}


def paired_row(label: str, rounded: list[dict], exact: list[dict]) -> list:
    """One line: ``rounded`` against ``exact`` (one dict per seed), every seed's test images pooled."""
    from bneck.pipeline.paired import compare as paired

    first, second, per_seed = [], [], []
    for a, b in zip(rounded, exact):
        assert sorted(a) == sorted(b), "the two fine-tuned models were scored on different test images"
        paths = sorted(a)
        first += [a[p] for p in paths]
        second += [b[p] for p in paths]
        per_seed.append(f"{100 * (sum(a.values()) - sum(b.values())) / len(paths):+.1f}")
    c = paired(first, second)
    n = len(exact)
    return [
        label,
        f"{100 * sum(first) / len(first):.2f} %",
        f"{100 * sum(second) / len(second):.2f} %",
        " / ".join(per_seed),
        f"{100 * c.gain:+.2f} [{100 * c.low:+.2f}, {100 * c.high:+.2f}]",
        f"{c.p_value:.2g}",
        f"{c.first_only + c.second_only} of {len(first)} ({n} seed(s))",
    ]


def one(name: str, work: Path, precisions: list[str], seeds: list[int]) -> tuple[list, list, list]:
    """Run the case, fine-tune its head at every precision and seed; (disk rows, paired rows, timings)."""
    from bench_finetune_accuracy import one as run_case

    data = CASES[name][0]
    run_case(name, work, work / "cache")
    run = work / name
    own_seed = json.loads((run / "finetuned" / "manifest.json").read_text())["config"]["seed"]
    right, timings = {}, []
    for seed in seeds:
        for precision in ["float32", *precisions]:
            folder = work / f"{name}-{precision}-seed{seed}"
            if precision == "float32" and seed == own_seed:
                folder = run / "finetuned"
            else:
                cache = work / ("cache" if precision == "float32" else f"cache-{precision}")
                seconds = refinetune(run, data, folder, cache, precision, seed)
                timings.append([name, precision, str(seed), f"{seconds:.0f}"])
            right[precision, seed] = right_on_test(folder)
            print(f"{name} {precision} seed {seed}: test {100 * np.mean(list(right[precision, seed].values())):.2f} %")
    exact = [right["float32", s] for s in seeds]
    accuracy = [paired_row(f"{name}: {p} vs float32", [right[p, s] for s in seeds], exact) for p in precisions]
    if len(seeds) > 1:  # what a seed alone moves: float32 against float32 with the next seed
        accuracy.append(paired_row(f"{name}: float32, next seed vs this", exact[1:] + exact[:1], exact))
    return _disk(run), accuracy, timings


def _disk(run: Path) -> list:
    disk_now, declared = declared_bytes(run / "features")
    folder = folder_bytes(run)
    whole = folder - disk_now + declared
    mb = 1e6
    return [
        [run.name, "feature files", f"{disk_now / mb:.0f}", f"{declared / mb:.0f}", f"{disk_now / declared:.2f}"],
        [run.name, "run folder", f"{folder / mb:.0f}", f"{whole / mb:.0f}", f"{folder / whole:.2f}"],
    ]


def main() -> None:
    from bneck.core.progress import format_table
    from bneck.features.views.rows import VIEW_PRECISIONS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ["cats-mobilenetv2", "blood-mobilenetv2"]
    rounded = [v for v in VIEW_PRECISIONS if v != "float32"]
    p.add_argument("--only", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}")
    p.add_argument("--precisions", default="e8m5", help=f"comma-separated, of: {', '.join(rounded)}")
    p.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds (views, shuffling, dropout), comma-separated")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    a = p.parse_args()
    chosen = [n.strip() for n in a.only.split(",") if n.strip()]
    precisions = [n.strip() for n in a.precisions.split(",") if n.strip()]
    if any(n not in names for n in chosen) or not chosen:
        raise SystemExit(f"--only takes some of: {', '.join(names)}. Received: {a.only!r}")
    if any(n not in rounded for n in precisions) or not precisions:
        raise SystemExit(f"--precisions takes some of: {', '.join(rounded)}. Received: {a.precisions!r}")
    try:
        seeds = sorted({int(s) for s in a.seeds.split(",")})
    except ValueError:
        raise SystemExit(f"--seeds takes integers, comma-separated. Received: {a.seeds!r}") from None
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bneck-bench-storage-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["KERAS_HOME"] = keras_home(work)
    disk, accuracy, timings = [], [], []
    try:
        for name in chosen:
            rows, paired, spent = one(name, work, precisions, seeds)
            disk, accuracy, timings = disk + rows, accuracy + paired, timings + spent
        # the cases share one cache per precision (their views share entries: same backbone, layer, augmentation)
        layer = json.loads((work / chosen[-1] / "finetuned" / "metrics.json").read_text())["cache_frozen"]["layer"]
        f32 = view_bytes(work / "cache", layer)
        for precision in precisions:
            got = view_bytes(work / f"cache-{precision}", layer)
            share = f"{got / f32:.2f}"
            disk.append(["all cases", f"views at {precision}", f"{got / 1e6:.0f}", f"{f32 / 1e6:.0f}", share])
    finally:
        if not a.out:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(HEADERS, disk))
    print()
    heads = ["case", "rounded: test", "float32: test", "per seed, points", "pooled, points [95 %]", "McNemar p"]
    heads.append("discordant")
    print(format_table(heads, accuracy))
    print()
    print(format_table(["case", "views", "seed", "fine-tune s"], timings))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
