"""Benchmark stage 3: plain fine-tuning against ``--cache-frozen``, same data, one run.

Both paths fine-tune the same trained head on the same base from the same unfreeze
point with the same batch size and seed; the plain path runs every training image
through the whole base every epoch, the fast path trains the unfrozen top on the
cached output of the last frozen layer (K views per image). Prints seconds per
epoch (epoch 1 includes tracing, so the steady figure is the mean of the later
epochs), the ratio, and the first cached epoch including building the cache.

  python scripts/bench_finetune.py [--backbone vgg16 --size 150 --weights none]
      [--train-per-class 100] [--epochs 3] [--views 4] [--batch-size 16]
Random weights (the default, --weights none) time exactly like real ones.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bneck.core.progress import format_table  # noqa: E402
from bneck.features import extract  # noqa: E402
from bneck.pipeline.finetuning.stage import finetune  # noqa: E402
from bneck.pipeline.training.stage import train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cats_and_dogs_small"


def subset(dest: Path, source: Path, per_class: dict) -> Path:
    """Copy the first N images per class of each split (sorted names) into ``dest``."""
    for split, n in per_class.items():
        for cls in sorted(p.name for p in (source / split).iterdir() if p.is_dir()):
            (dest / split / cls).mkdir(parents=True)
            for f in sorted((source / split / cls).iterdir())[:n]:
                shutil.copy(f, dest / split / cls / f.name)
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--size", type=int, default=150)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--weights", default="none")
    p.add_argument("--unfreeze-from", default="default")
    p.add_argument("--train-per-class", type=int, default=100)
    p.add_argument("--validation-per-class", type=int, default=25)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bneck-bench-ft-"))
    try:
        data = subset(work / "data", Path(a.data), {"train": a.train_per_class, "validation": a.validation_per_class})
        extract(
            data,
            work / "features",
            backbone=a.backbone,
            size=a.size,
            alpha=a.alpha,
            weights=a.weights,
            cache_dir=work / "cache",
            verbose=False,
        )
        train(work / "features", ["dense"], work / "models", epochs=5, verbose=False)
        head = str(work / "models" / "dense")
        common = dict(unfreeze_from=a.unfreeze_from, epochs=a.epochs, batch_size=a.batch_size, seed=0, verbose=True)
        plain = finetune(head, data, work / "plain", cache_frozen=False, **common)
        fast = finetune(
            head, data, work / "fast", cache_frozen=True, views=a.views, cache_dir=str(work / "cache"), **common
        )
        again = finetune(
            head, data, work / "again", cache_frozen=True, views=a.views, cache_dir=str(work / "cache"), **common
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def steady(result):
        later = result.metrics["epoch_seconds"][1:] or result.metrics["epoch_seconds"]
        return sum(later) / len(later)

    cache = fast.metrics["cache_frozen"]
    first_cached = cache["seconds"] + fast.metrics["epoch_seconds"][0]
    rows = [
        ["plain", round(plain.metrics["epoch_seconds"][0], 2), round(steady(plain), 3), "", 1.0],
        [
            f"cache-frozen, {cache['views']} views",
            round(fast.metrics["epoch_seconds"][0], 2),
            round(steady(fast), 3),
            round(first_cached, 1),
            round(steady(plain) / steady(fast), 1),
        ],
    ]
    n = 2 * a.train_per_class
    print(
        f"\n{a.backbone}@{a.size} weights={a.weights}, unfreeze from {a.unfreeze_from} "
        f"(cached layer {cache['layer']}), {n} training images, batch {a.batch_size}, "
        f"{a.epochs} epochs"
    )
    print(format_table(["path", "epoch 1 s", "s/epoch (later)", "first epoch incl. cache s", "speed-up"], rows))
    print(
        f"cache: {cache['rows_computed']} trunk rows computed in {cache['seconds']:.1f} s; "
        f"a second --cache-frozen run computed {again.metrics['cache_frozen']['rows_computed']} "
        f"and reused {again.metrics['cache_frozen']['rows_reused']}"
    )


if __name__ == "__main__":
    main()
