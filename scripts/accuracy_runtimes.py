"""Downstream accuracy of features from each runtime and precision, side by side.

Extracts the same images three ways, each into its own cache (fp32 OpenVINO
shares TensorFlow's key, so one cache would simply hand back TensorFlow's rows):

  tensorflow fp32 | openvino fp32 | openvino int8 (calibrated on training images, --force)
  | openvino bf16 (with --bf16, on CPUs with AVX512_BF16 or AMX; --force)

then trains the same classifiers (default logreg and dense, same seed) on each and
prints validation/test accuracy with the change against TensorFlow.

  python scripts/accuracy_runtimes.py --backbone mobilenet --alpha 0.25 --size 224 \
      --weights imagenet [--data ../shared/data/cats_and_dogs_small] [--out runs/runtimes] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bneck.core.progress import format_table  # noqa: E402
from bneck.features import extract  # noqa: E402
from bneck.pipeline import train  # noqa: E402

VARIANTS = (("tensorflow", "fp32"), ("openvino", "fp32"), ("openvino", "int8"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cats_and_dogs_small"))
    p.add_argument("--out", default="runs/runtimes")
    p.add_argument("--backbone", default="mobilenet")
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--classifiers", default="logreg,dense")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--bf16", action="store_true", help="also bf16 (CPUs with native bf16 only)")
    a = p.parse_args()
    out = Path(a.out)
    names = a.classifiers.split(",")
    rows, baseline, figures = [], {}, {}
    for runtime, precision in VARIANTS + (("openvino", "bf16"),) * a.bf16:
        label = f"{runtime} {precision}"
        folder = out / f"{runtime}-{precision}"
        start = time.perf_counter()
        report = extract(
            a.data,
            folder / "features",
            backbone=a.backbone,
            alpha=a.alpha,
            size=a.size,
            weights=a.weights,
            runtime=runtime,
            precision=precision,
            calibration_images=a.calibration_images,
            force=True,
            cache_dir=str(out / f"cache-{runtime}"),
            verbose=False,
        )
        seconds = time.perf_counter() - start
        board = train(folder / "features", names, folder / "models", verbose=False)
        check = report.quantization
        for result in sorted(board.results, key=lambda r: names.index(r.name)):
            val, test = result.accuracy("validation"), result.accuracy("test")
            baseline.setdefault(result.name, test)
            delta = 100 * (test - baseline[result.name])
            rows.append(
                [
                    label,
                    result.name,
                    f"{100 * val:.1f}",
                    f"{100 * test:.1f}",
                    f"{delta:+.1f}",
                    f"{check['cosine_min']:.3f}/{check['cosine_mean']:.3f}" if check else "",
                    round(seconds, 1),
                ]
            )
            figures[f"{label} {result.name}"] = {"validation": val, "test": test}
    print(
        format_table(
            [
                "features",
                "classifier",
                "val %",
                "test %",
                "test vs tensorflow (pt)",
                "cosine to fp32 min/mean",
                "extract s",
            ],
            rows,
        )
    )
    (out / "accuracy.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
