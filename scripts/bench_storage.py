"""Benchmark disk: what a run's feature files and fine-tuning views take, and what storing views at
bfloat16 costs in accuracy, on the same test images.

For each case (the reference MobileNetV2-0.5 runs of `bench_finetune_accuracy`), it runs
`bneck run` with its defaults (exact float32 views, every row compressed losslessly), then
fine-tunes the same head again with ``view_precision="bfloat16"`` into a cache of its own,
and prints:

* disk: the run folder and its feature files against what they would take uncompressed
  (the bytes their datasets declare: how bneck stored them before), the fine-tuning views
  at bfloat16 against float32 (compressed too, so the share is against a lossless copy);
* accuracy: both fine-tuned models on the same test images, the difference with its 95 %
  interval and McNemar's p, and how many test images change class.

  python scripts/bench_storage.py [--only cats-mobilenetv2,blood-mobilenetv2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import h5py

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


def bfloat16_views(run: Path, data: Path, out: Path, cache: Path):
    """Fine-tune the run's head again with the run's options, its views stored at bfloat16."""
    from bneck.pipeline.finetuning.options import FINETUNE
    from bneck.pipeline.finetuning.stage import finetune

    manifest = json.loads((run / "finetuned" / "manifest.json").read_text())
    config = {k: v for k, v in manifest["config"].items() if k in FINETUNE.options and k != "augment"}
    config.update(manifest["config"]["augment"])
    return finetune(
        manifest["head"]["folder"],
        str(data),
        str(out),
        **config,
        view_precision="bfloat16",
        cache_dir=str(cache),
        verbose=False,
    )


def test_rows(folder: Path) -> dict:
    from bneck.pipeline.artifacts import read_verified
    from bneck.pipeline.predictions_csv import read_predictions

    rows = read_predictions(read_verified(str(folder)).files["predictions.csv"].decode())
    return {r["path"]: r for r in rows if r["split"] == "test"}


def compare(bf16: Path, f32: Path) -> list:
    from bneck.pipeline.paired import compare as paired

    a, b = test_rows(bf16), test_rows(f32)
    paths = sorted(a)
    assert sorted(b) == paths, "the two fine-tuned models were scored on different test images"

    def right(rows, p):
        return max(rows[p]["probabilities"], key=rows[p]["probabilities"].get) == rows[p]["true"]

    first, second = [right(a, p) for p in paths], [right(b, p) for p in paths]
    c = paired(first, second)
    changed = sum(
        max(a[p]["probabilities"], key=a[p]["probabilities"].get)
        != max(b[p]["probabilities"], key=b[p]["probabilities"].get)
        for p in paths
    )
    return [
        f"bfloat16 {100 * sum(first) / len(paths):.1f} %",
        f"float32 {100 * sum(second) / len(paths):.1f} %",
        f"{100 * c.gain:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}]",
        f"{c.p_value:.2g}",
        f"{changed} of {len(paths)}",
    ]


def one(name: str, work: Path) -> tuple[list, list]:
    from bench_finetune_accuracy import one as run_case

    data = CASES[name][0]
    run_case(name, work, work / "cache")
    run = work / name
    bfloat16_views(run, data, work / f"{name}-bfloat16-views", work / "cache-bfloat16")
    disk_now, declared = declared_bytes(run / "features")
    folder = folder_bytes(run)
    mb = 1e6
    disk = [
        [name, "feature files", f"{disk_now / mb:.0f}", f"{declared / mb:.0f}", f"{disk_now / declared:.2f}"],
        [
            name,
            "run folder",
            f"{folder / mb:.0f}",
            f"{(folder - disk_now + declared) / mb:.0f}",
            f"{folder / (folder - disk_now + declared):.2f}",
        ],  # fmt: skip
    ]
    return disk, [name, *compare(work / f"{name}-bfloat16-views", run / "finetuned")]


def main() -> None:
    from bneck.core.progress import format_table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ["cats-mobilenetv2", "blood-mobilenetv2"]
    p.add_argument("--only", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    a = p.parse_args()
    chosen = [n.strip() for n in a.only.split(",") if n.strip()]
    if any(n not in names for n in chosen):
        raise SystemExit(f"--only takes some of: {', '.join(names)}. Received: {a.only!r}")
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bneck-bench-storage-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["KERAS_HOME"] = keras_home(work)
    disk, accuracy = [], []
    try:
        for name in chosen:
            rows, paired = one(name, work)
            disk += rows
            accuracy.append(paired)
        # the cases share one cache (their views share entries: same backbone, layer, augmentation)
        layer = json.loads((work / chosen[-1] / "finetuned" / "metrics.json").read_text())["cache_frozen"]["layer"]
        bf16, f32 = view_bytes(work / "cache-bfloat16", layer), view_bytes(work / "cache", layer)
        disk.append(["all cases", "fine-tuning views", f"{bf16 / 1e6:.0f}", f"{f32 / 1e6:.0f}", f"{bf16 / f32:.2f}"])
    finally:
        if not a.out:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(HEADERS, disk))
    print()
    heads = ["case", "views bfloat16: test", "views float32: test", "difference, points [95 %]", "McNemar p", "changed"]
    print(format_table(heads, accuracy))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
