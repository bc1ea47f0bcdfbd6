"""Benchmark ``--engine ray`` against ``--engine local`` on the same images, in one run.

Every run starts from an empty cache and writes its own output folder. The Ray
cluster is started once (``ray.init`` on this machine, its start-up timed apart),
then one run per worker count; each includes creating its actors (one model load
each), sharding, and stitching the virtual split file.

  python scripts/bench_ray.py --backbone mobilenet --alpha 0.25 --size 224 \\
      --weights ../shared/data/weights/mobilenet_2_5_224_tf_no_top.h5 --images 1000 --workers 1,2,4
  python scripts/bench_ray.py --backbone vgg16 --size 150 --weights none --images 300 --workers 1,2 --shard-size 64
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

from bneck.core.progress import format_table  # noqa: E402
from bneck.features import extract, read_features  # noqa: E402

SHARED = Path(os.environ.get("BNECK_SHARED", ROOT.parent / "shared"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="mobilenet")
    p.add_argument("--alpha", type=float, default=None, help="mobilenet width (e.g. 0.25)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--weights", default=str(SHARED / "data" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"))
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--workers", default="1,2", help="worker counts to sweep")
    p.add_argument("--shard-size", type=int, default=128)
    p.add_argument("--data", default=str(SHARED / "data" / "cats_and_dogs_small"))
    p.add_argument("--json", default=None)
    a = p.parse_args()
    import numpy as np
    import ray

    work = Path(tempfile.mkdtemp(prefix="bneck-bench-ray-"))
    try:
        for cls in ("cats", "dogs"):
            (work / "images" / "train" / cls).mkdir(parents=True)
            names = sorted(os.listdir(Path(a.data) / "train" / cls), key=lambda s: int(s.split(".")[1]))
            for name in names[: a.images // 2]:
                shutil.copy(Path(a.data) / "train" / cls / name, work / "images" / "train" / cls / name)
        n = 2 * (a.images // 2)
        common = dict(backbone=a.backbone, alpha=a.alpha, size=a.size, weights=a.weights, verbose=False)
        print(f"{a.backbone} @{a.size}, {n} images, shard size {a.shard_size}, {os.cpu_count()} cores", flush=True)
        from bneck.core.tfimport import import_tensorflow

        import_tensorflow()  # not in local's time: the actors import it in their own processes, timed
        t = time.perf_counter()
        extract(work / "images", work / "local", cache_dir=str(work / "c-local"), **common)
        local_s = time.perf_counter() - t
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        start_s = time.perf_counter() - t
        rows = [["local", "", round(n / local_s, 1), 1.0, round(local_s, 1), ""]]
        figures = {"local_s": local_s, "ray_start_s": start_s}
        reference = read_features(str(work / "local" / "train.h5")).features
        for workers in [int(w) for w in a.workers.split(",")]:
            t = time.perf_counter()
            report = extract(
                work / "images",
                work / f"ray{workers}",
                cache_dir=str(work / f"c-ray{workers}"),
                engine="ray",
                workers=workers,
                shard_size=a.shard_size,
                **common,
            )
            seconds = time.perf_counter() - t
            assert report.forward_images == n
            diff = float(np.abs(read_features(str(work / f"ray{workers}" / "train.h5")).features - reference).max())
            rows.append(
                [
                    f"ray, {workers} worker(s)",
                    report.splits[0].shards["total"],
                    round(n / seconds, 1),
                    round(local_s / seconds, 2),
                    round(seconds, 1),
                    round(report.worker_peak_rss_mb),
                ]
            )
            figures[f"ray_{workers}_s"] = seconds
            figures[f"ray_{workers}_max_abs_diff"] = diff
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_table(["engine", "shards", "img/s", "x local", "seconds", "worker peak MB"], rows))
    print(f"Ray cluster start-up (ray.init, once, not in the rows above): {start_s:.1f} s")
    print(
        "largest |ray - local| feature difference: "
        + ", ".join(f"{k.split('_')[1]} worker(s) {v:.1e}" for k, v in figures.items() if k.endswith("diff"))
    )
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
