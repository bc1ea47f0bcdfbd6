"""Benchmark stage 3's memory: peak resident memory of a fine-tune at N and 10 N training images.

Flat memory is the claim: with ``--cache-frozen`` (the default) images are decoded only
where the feature cache lacks their trunk rows, a batch at a time, and the rows stream
from a file a block at a time, so the peak resident set should not grow with the number
of images. The plain path (``--no-cache-frozen``) holds every decoded image in memory
and is measured at N for contrast.

Volume comes from the reference images repeated: copy k of an image is the same JPEG
with a few bytes appended after its end marker (decoders ignore them), so every copy
has its own sha256 and its own rows, and the same pixels. Each fine-tune runs in a
fresh process; its peak RSS is that process's ``VmHWM`` (not ``ru_maxrss``: on Linux
a child started by fork and exec reports its parent's peak there, here the peak of the
extraction that made the data).

  python scripts/bench_finetune_memory.py [--small 2000] [--factor 10] [--views 2] [--epochs 1]
Uses MobileNet-0.25 with the ImageNet weights in ../shared/data/weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bneck.core.progress import format_table  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cats_and_dogs_small"
WEIGHTS = ROOT.parent / "shared" / "data" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
BACKBONE = dict(backbone="mobilenet", alpha=0.25, size=224)

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from bneck.pipeline.finetuning.stage import finetune
start = time.perf_counter()
r = finetune({head!r}, {data!r}, {out!r}, verbose=False, cache_dir={cache!r}, epochs={epochs}, views={views},
             rotation=0, shift=0, shear=0, zoom=0, flip=True, cache_frozen={cache_frozen})
peak_kb = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
print(json.dumps({{"peak_rss_mb": peak_kb / 1024,
                  "seconds": time.perf_counter() - start, "rows": r.metrics.get("cache_frozen", {{}})}}))
"""


def grow(dest: Path, train_images: int, other_per_class: int) -> Path:
    """A cats/dogs folder with ``train_images`` distinct training files (copies of the reference
    images with bytes appended) and ``other_per_class`` validation and test images per class."""
    for split in ("train", "validation", "test"):
        for cls in ("cats", "dogs"):
            (dest / split / cls).mkdir(parents=True)
            sources = sorted((DATA / split / cls).iterdir())
            n = train_images // 2 if split == "train" else other_per_class
            for k in range(n):
                src = sources[k % len(sources)]
                data = src.read_bytes() + (b"" if k < len(sources) else f"bneck-copy-{k}".encode())
                (dest / split / cls / f"{k:06d}-{src.name}").write_bytes(data)
    return dest


def measure(work: Path, train_images: int, a, cache_frozen: bool) -> dict:
    from bneck.features import extract
    from bneck.pipeline.training.stage import train

    folder = work / f"n{train_images}"
    data, cache = folder / "data", str(work / "cache")
    if not data.exists():  # the plain and the cached path share the data, features and head
        grow(data, train_images, a.other_per_class)
        extract(data, folder / "features", cache_dir=cache, weights=str(WEIGHTS), verbose=False, **BACKBONE)
        train(folder / "features", ["gap-dense"], folder / "models", verbose=False, epochs=5)
    code = CHILD.format(
        root=str(ROOT),
        head=str(folder / "models" / "gap-dense"),
        data=str(data),
        out=str(folder / f"ft-{cache_frozen}"),
        cache=cache,
        epochs=a.epochs,
        views=a.views,
        cache_frozen=cache_frozen,
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=2000, help="training images of the small run")
    p.add_argument("--factor", type=int, default=10, help="the large run has this many times more")
    p.add_argument("--other-per-class", type=int, default=100, help="validation and test images per class")
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bneck-bench-mem-"))
    rows = []
    try:
        for n, cache_frozen in ((a.small, False), (a.small, True), (a.small * a.factor, True)):
            t = time.perf_counter()
            got = measure(work, n, a, cache_frozen)
            rows.append(
                [
                    n,
                    "cached trunk, streamed rows" if cache_frozen else "plain (images in memory)",
                    f"{got['peak_rss_mb']:.0f}",
                    f"{got['seconds']:.0f}",
                    f"{time.perf_counter() - t:.0f}",
                ]
            )
            print(
                format_table(["train images", "path", "peak RSS MB", "fine-tune s", "with setup s"], rows[-1:]),
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(format_table(["train images", "path", "peak RSS MB", "fine-tune s", "with setup s"], rows))
    small, large = float(rows[1][2]), float(rows[2][2])
    print(f"\npeak RSS at {a.small * a.factor} / at {a.small} training images (cached trunk): {large / small:.2f}")
    print(f"CPU flags: {' '.join(sorted(_flags()))}")


def _flags() -> set:
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "fma"}
    try:
        with open("/proc/cpuinfo") as handle:
            return wanted & set(next(line for line in handle if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
