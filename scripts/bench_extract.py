"""Benchmark stage 1 side by side with the peer idiom, in one run, on the same images.

Three ways to get features for the same N images, timed in this one process:

* ceiling: the backbone's forward pass alone on in-memory, already decoded and
  preprocessed tensors (best of a compiled call and ``predict``), build excluded;
* peer: ``../shared/peers/keras_idiom.py``'s own ``extract`` (image_dataset_from_directory
  + ``base.predict``), including building its model;
* bneck: ``features.extract`` from the folder, including building its model, on a
  fresh cache; then the same call again (the rerun, everything cached).

Prints img/s for each and the ratios. Timings on a shared machine are noisy; the
ratios within one run are what count.

  python scripts/bench_extract.py --backbone vgg16 --weights none --images 400
  python scripts/bench_extract.py --backbone mobilenet --alpha 0.25 --size 224 \
      --weights ../shared/data/weights/mobilenet_2_5_224_tf_no_top.h5 --images 2000
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features import extract, get_backbone  # noqa: E402
from features.decode import decode_image  # noqa: E402
from features.progress import format_table  # noqa: E402
from features.tfimport import import_tensorflow  # noqa: E402

SHARED = Path(os.environ.get("BNECK_SHARED", ROOT.parent / "shared"))


def load_peer():
    spec = importlib.util.spec_from_file_location("keras_idiom", SHARED / "peers" / "keras_idiom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_subset(src: Path, dest: Path, n: int) -> list[Path]:
    """Copy n images (half per class) of src/train into dest/CLASS/; returns their paths."""
    files = []
    for cls in ("cats", "dogs"):
        names = sorted(os.listdir(src / "train" / cls), key=lambda s: int(s.split(".")[1]))[: n // 2]
        (dest / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(src / "train" / cls / name, dest / cls / name)
            files.append(dest / cls / name)
    return files


def ceiling(build, preprocess, files, size, batch):
    import numpy as np

    tf = import_tensorflow()
    model = build()
    x = preprocess(np.stack([decode_image(str(f), size) for f in files]).astype("float32"))
    batches = [tf.constant(x[i:i + batch]) for i in range(0, len(x), batch)]
    call = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    call(batches[0])
    call(batches[-1])
    best = 0.0
    for run in (lambda b: call(b).numpy(), lambda b: model.predict(b, verbose=0)):
        run(batches[0])
        t = time.perf_counter()
        for b in batches:
            run(b)
        best = max(best, len(files) / (time.perf_counter() - t))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="vgg16", choices=["vgg16", "mobilenet"])
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--weights", default="none", help="none or a local .h5 path")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default=str(SHARED / "data" / "cats_and_dogs_small"))
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--openvino", action="store_true", help="also time --runtime openvino (fp32)")
    a = p.parse_args()

    import_tensorflow()  # quietly, before the peer module imports keras
    entry = get_backbone(a.backbone)
    size = a.size or entry.default_size
    weights = None if a.weights == "none" else a.weights
    peer = load_peer()
    peer_key = "vgg16" if a.backbone == "vgg16" else "mobilenet025"
    peer_build, peer_pre = peer.BACKBONES[peer_key]
    work = Path(tempfile.mkdtemp(prefix="bneck-bench-"))
    try:
        files = make_subset(Path(a.data), work / "images" / "train", a.images)
        n = len(files)
        print(f"{a.backbone} @{size}, weights={a.weights}, {n} images, batch {a.batch_size}, "
              f"{os.cpu_count()} cores", flush=True)

        top = ceiling(lambda: peer_build(weights, size), peer_pre, files, size, a.batch_size)

        t = time.perf_counter()
        base = peer_build(weights, size)
        peer.extract(base, peer_pre, str(work / "images" / "train"), size)
        peer_s = time.perf_counter() - t

        kwargs = dict(backbone=a.backbone, alpha=a.alpha, size=size, weights=a.weights,
                      batch_size=a.batch_size, cache_dir=str(work / "cache"), verbose=False)
        t = time.perf_counter()
        first = extract(work / "images", work / "out", **kwargs)
        ours_s = time.perf_counter() - t
        assert first.forward_images == n, first.forward_images
        t = time.perf_counter()
        again = extract(work / "images", work / "out", **kwargs)
        rerun_s = time.perf_counter() - t
        assert again.forward_images == 0
        ov = {}
        if a.openvino:  # cold (converting), then converted model cached, features not
            for label, cache in (("cold", "ov_cache"), ("warm", "ov_cache")):
                shutil.rmtree(work / cache / "features", ignore_errors=True)
                t = time.perf_counter()
                report = extract(work / "images", work / f"ov_out_{label}",
                                 **{**kwargs, "cache_dir": str(work / cache)}, runtime="openvino")
                ov[label] = time.perf_counter() - t
                assert report.forward_images == n and report.converted == (label == "cold")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {"backbone": a.backbone, "size": size, "images": n,
               "ceiling_img_s": top, "peer_img_s": n / peer_s, "bneck_img_s": n / ours_s,
               "bneck_rerun_s": rerun_s, "bneck_first_s": ours_s}
    rows = [["ceiling (forward only, in memory)", round(top, 1), 1.0, round(top * peer_s / n, 2)],
            ["peer idiom (dataset + predict)", round(n / peer_s, 1), round(n / peer_s / top, 2), 1.0],
            ["bneck extract", round(n / ours_s, 1), round(n / ours_s / top, 2), round(peer_s / ours_s, 2)]]
    for label, seconds in ov.items():
        what = "incl. conversion" if label == "cold" else "converted model cached"
        rows.append([f"bneck --runtime openvino ({what})", round(n / seconds, 1),
                     round(n / seconds / top, 2), round(peer_s / seconds, 2)])
        figures[f"openvino_{label}_img_s"] = n / seconds
    print(format_table(["method", "img/s", "x ceiling", "x peer"], rows))
    print(f"bneck rerun on unchanged images: {rerun_s:.2f} s = {100 * rerun_s / ours_s:.2f}% of "
          f"the first run ({ours_s:.1f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
