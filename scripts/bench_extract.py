"""Benchmark stage 1 side by side with the peer idiom, in one run, on the same images.

Three ways to get features for the same N images, timed in this one process:

* ceiling: the backbone's forward pass alone on in-memory, already decoded and
  preprocessed tensors (best of a compiled call and ``predict``), build excluded;
* peer: ``../shared/peers/keras_idiom.py``'s own ``extract`` (image_dataset_from_directory
  + ``base.predict``), including building its model;
* bneck: ``features.extract`` from the folder with its defaults (``--runtime auto``:
  OpenVINO from 2,000 images when installed, converting included), on a fresh cache;
  then the same call again (the rerun, everything cached); then ``--runtime tensorflow``
  on another fresh cache.

With ``--openvino``: ``--runtime openvino`` fp32 end to end (converting, then with the
converted model cached); with ``--int8`` also int8 (quantising, then cached; with
``--force``, and the cosine check printed). Both also print where the time goes:
decoding alone on all cores, and each runtime's forward pass alone on decoded images.

Prints img/s for each and the ratios. Timings on a shared machine are noisy; the
ratios within one run are what count.

  python scripts/bench_extract.py --backbone vgg16 --weights none --images 400
  python scripts/bench_extract.py --backbone mobilenet --alpha 0.25 --size 224 \
      --weights ../shared/data/weights/mobilenet_2_5_224_tf_no_top.h5 --images 2000 --openvino
  python scripts/bench_extract.py --backbone vgg16 --size 150 --weights none --images 600 --int8 --bf16
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

from bneck.core.progress import format_table  # noqa: E402
from bneck.core.tfimport import import_tensorflow  # noqa: E402
from bneck.features import extract, get_backbone  # noqa: E402
from bneck.features.images.batches import decoded_batches  # noqa: E402
from bneck.features.images.decode import decode_image  # noqa: E402

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
    batches = [tf.constant(x[i : i + batch]) for i in range(0, len(x), batch)]
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


def decode_only(files, size, batch):
    """img/s of decoding and resizing alone, on all cores (what feeds any runtime)."""
    t = time.perf_counter()
    n = sum(len(keys) for keys, _, _ in decoded_batches([(str(f), str(f)) for f in files], size, batch))
    return n / (time.perf_counter() - t)


def forward_only(model, files, size, batch):
    """img/s of a bneck feature model (any runtime) on decoded uint8 batches in memory."""
    import numpy as np

    x = np.stack([decode_image(str(f), size) for f in files])
    model(x[:batch])
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    return len(x) / (time.perf_counter() - t)


def openvino_runs(work, kwargs, n, precisions):
    """Time --runtime openvino per precision: cold (convert/quantise), then model cached."""
    seconds, reports = {}, {}
    for precision in precisions:
        extra = dict(runtime="openvino", precision=precision)
        if precision == "int8":
            extra.update(force=True, calibration_images=min(300, n * 3 // 4))
        if precision == "bf16":
            extra.update(force=True)
        for label in ("cold", "warm"):
            shutil.rmtree(work / "ov_cache" / "features", ignore_errors=True)
            t = time.perf_counter()
            report = extract(
                work / "images",
                work / f"ov_out_{precision}_{label}",
                **{**kwargs, "cache_dir": str(work / "ov_cache")},
                **extra,
            )
            seconds[(precision, label)] = time.perf_counter() - t
            assert report.forward_images == n
            reports[precision] = report
    return seconds, reports


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
    p.add_argument("--int8", action="store_true", help="also time --runtime openvino --precision int8")
    p.add_argument("--bf16", action="store_true", help="also time --precision bf16 (CPUs with native bf16)")
    a = p.parse_args()
    precisions = ["fp32"] * (a.openvino or a.int8 or a.bf16) + ["int8"] * a.int8 + ["bf16"] * a.bf16

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
        print(
            f"{a.backbone} @{size}, weights={a.weights}, {n} images, batch {a.batch_size}, {os.cpu_count()} cores",
            flush=True,
        )

        top = ceiling(lambda: peer_build(weights, size), peer_pre, files, size, a.batch_size)

        t = time.perf_counter()
        base = peer_build(weights, size)
        peer.extract(base, peer_pre, str(work / "images" / "train"), size)
        peer_s = time.perf_counter() - t

        kwargs = dict(
            backbone=a.backbone,
            alpha=a.alpha,
            size=size,
            weights=a.weights,
            batch_size=a.batch_size,
            cache_dir=str(work / "cache"),
            verbose=False,
        )
        t = time.perf_counter()
        first = extract(work / "images", work / "out", **kwargs)
        ours_s = time.perf_counter() - t
        assert first.forward_images == n, first.forward_images
        t = time.perf_counter()
        again = extract(work / "images", work / "out", **kwargs)
        rerun_s = time.perf_counter() - t
        assert again.forward_images == 0
        t = time.perf_counter()
        extract(
            work / "images", work / "out_tf", **dict(kwargs, cache_dir=str(work / "tf_cache"), runtime="tensorflow")
        )
        tf_s = time.perf_counter() - t
        ov, parts = {}, []
        if precisions:  # cold (converting/quantising), then the model cached, features not
            ov, reports = openvino_runs(work, kwargs, n, precisions)
            from bneck.features.runtimes.openvino import OpenVINOFeatureModel

            parts.append(["decode + resize only, all cores", round(decode_only(files, size, a.batch_size), 1)])
            for precision, report in reports.items():
                model = OpenVINOFeatureModel(entry, report.spec, str(work / "ov_cache"))
                parts.append(
                    [f"openvino {precision} forward only", round(forward_only(model, files, size, a.batch_size), 1)]
                )
            for precision in ("int8", "bf16"):
                if precision in reports:
                    q = reports[precision].quantization
                    print(
                        f"{precision} vs fp32 (held-back training images): cosine min {q['cosine_min']:.4f}, "
                        f"mean {q['cosine_mean']:.4f}, over {q['check_images']} images",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "backbone": a.backbone,
        "size": size,
        "images": n,
        "ceiling_img_s": top,
        "peer_img_s": n / peer_s,
        "bneck_img_s": n / ours_s,
        "bneck_rerun_s": rerun_s,
        "bneck_first_s": ours_s,
        "bneck_default_runtime": first.runtime,
        "bneck_tensorflow_img_s": n / tf_s,
    }
    rows = [
        ["ceiling (forward only, in memory)", round(top, 1), 1.0, round(top * peer_s / n, 2)],
        ["peer idiom (dataset + predict)", round(n / peer_s, 1), round(n / peer_s / top, 2), 1.0],
        [
            f"bneck extract, defaults (auto -> {first.runtime})",
            round(n / ours_s, 1),
            round(n / ours_s / top, 2),
            round(peer_s / ours_s, 2),
        ],
        ["bneck extract --runtime tensorflow", round(n / tf_s, 1), round(n / tf_s / top, 2), round(peer_s / tf_s, 2)],
    ]
    for (precision, label), seconds in ov.items():
        cold = {"fp32": "incl. conversion", "int8": "incl. quantisation", "bf16": "incl. its check"}
        what = {"cold": cold[precision], "warm": "model cached"}[label]
        rows.append(
            [
                f"bneck --runtime openvino {precision} ({what})",
                round(n / seconds, 1),
                round(n / seconds / top, 2),
                round(peer_s / seconds, 2),
            ]
        )
        figures[f"openvino_{precision}_{label}_img_s"] = n / seconds
    print(format_table(["method", "img/s", "x ceiling", "x peer"], rows))
    print(f"default runtime: {first.runtime} ({first.runtime_why})")
    if parts:
        print("\nwhere the time goes (same images, in memory where it says so):")
        print(format_table(["part", "img/s"], parts))
        figures["parts_img_s"] = {name: v for name, v in parts}
    print(
        f"bneck rerun on unchanged images: {rerun_s:.2f} s = {100 * rerun_s / ours_s:.2f}% of "
        f"the first run ({ours_s:.1f} s)"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
