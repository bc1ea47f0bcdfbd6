"""Reproduce the reference experiment table (../shared/REFERENCE.md) for any backbone.

Three rows, each next to the published figure:
  1. bottleneck features + dense head (stage 1 + stage 2, the reference head settings);
  2. frozen base + augmentation (stage 3 with --unfreeze-from none);
  3. fine-tuned top block (stage 3 with the backbone's default unfreeze point).
Rows 2 and 3 start from row 1's head, with the fine-tuning defaults unless overridden.

  python scripts/reproduce_reference.py --data ../shared/data/cats_and_dogs_small \
      --backbone mobilenet --alpha 0.25 --size 224 --weights imagenet [--out runs/reference]
The published figures are VGG16's at 150 px; other backbones are compared with them
as the bar to clear, not as like for like.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bneck.core.progress import format_table  # noqa: E402
from bneck.features import extract  # noqa: E402
from bneck.pipeline import finetune, train  # noqa: E402

PUBLISHED = {
    "bottleneck features + dense head": "0.90-0.91 val (Keras blog); ~0.90 (DLwP)",
    "frozen base + augmentation": "~0.96 val (DLwP, GPU)",
    "fine-tuned top block": "0.94 val (Keras blog); ~0.97 test (DLwP)",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cats_and_dogs_small"))
    p.add_argument("--out", default="runs/reference")
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: finetune's)")
    p.add_argument("--views", type=int, default=None, help="cached views (default: finetune's)")
    a = p.parse_args()
    out = Path(a.out)
    rows = []

    start = time.perf_counter()
    extract(a.data, out / "features", backbone=a.backbone, alpha=a.alpha, size=a.size, weights=a.weights)
    board = train(out / "features", ["dense"], out / "models")
    dense = board.results[0]
    rows.append(
        [
            "bottleneck features + dense head",
            dense.accuracy("validation"),
            dense.accuracy("test"),
            time.perf_counter() - start,
        ]
    )
    extra = {k: v for k, v in (("epochs", a.epochs), ("views", a.views)) if v is not None}
    for label, point, folder in (
        ("frozen base + augmentation", "none", "frozen_augmented"),
        ("fine-tuned top block", None, "finetuned"),
    ):
        start = time.perf_counter()
        result = finetune(dense.folder, a.data, out / folder, unfreeze_from=point, cache_frozen=True, **extra)
        rows.append(
            [
                label,
                result.metrics["validation"]["accuracy"],
                result.metrics.get("test", {}).get("accuracy"),
                time.perf_counter() - start,
            ]
        )

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    name = f"{a.backbone}{'-' + str(a.alpha) if a.alpha else ''}@{a.size or 'default'}"
    print(f"\nreference table, {name}, weights {a.weights}, data {a.data}")
    print(
        format_table(
            ["experiment", "published (VGG16)", "ours val", "ours test", "seconds"],
            [[r[0], PUBLISHED[r[0]], pct(r[1]), pct(r[2]), round(r[3])] for r in rows],
        )
    )


if __name__ == "__main__":
    main()
