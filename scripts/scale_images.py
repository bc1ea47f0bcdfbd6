"""Distinct JPEGs made from the reference split, for measuring cost at scale (``bench_scale.py``).

Image ``i`` of a split is reference image ``i % n`` of the same split and class, randomly cropped
(75-100 % of each side), maybe flipped, with small brightness, colour and contrast changes and a
JPEG quality of 85-95, all seeded by ``i``: every file hashes differently (checked), and each
split is made only from that split's reference images. Sizes are nested: the first 1,000
images of a 10,000-image set are the 1,000-image set (hard links, so no extra disk).

  python scripts/scale_images.py 100000 /work/scale/100000 [--like /work/scale/10000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "cats_and_dogs_small"
SHARES = {"train": 0.8, "validation": 0.1, "test": 0.1}
LONG_SIDE = 320


def plan(total: int) -> list[tuple[str, str, int, str]]:
    """(split, class, index, source path) for every image of a ``total``-image set, in a fixed order."""
    items = []
    for split, share in SHARES.items():
        classes = sorted(p.name for p in (REFERENCE / split).iterdir() if p.is_dir())
        sources = {c: sorted(str(p) for p in (REFERENCE / split / c).iterdir()) for c in classes}
        per_class = round(total * share / len(classes))
        for c in classes:
            items += [(split, c, i, sources[c][i % len(sources[c])]) for i in range(per_class)]
    return items


def variant(source: str, index: int, seed_offset: int = 0) -> bytes:
    """The JPEG bytes of variant ``index`` of ``source``."""
    import io
    import random

    from PIL import Image, ImageEnhance

    rng = random.Random(index * 7919 + seed_offset)
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    cw, ch = int(w * rng.uniform(0.75, 1.0)), int(h * rng.uniform(0.75, 1.0))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Color, ImageEnhance.Contrast):
        image = enhance(image).enhance(rng.uniform(0.85, 1.15))
    scale = LONG_SIDE / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randint(85, 95))
    return out.getvalue()


def _write(item: tuple[str, str, int, str, str]) -> str:
    split, c, index, source, dest = item
    path = os.path.join(dest, split, c, f"{c}.{index:06d}.jpg")
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(variant(source, index))
        os.replace(path + ".tmp", path)
    return path


def make(total: int, dest: Path, like: Path | None = None, processes: int = 2) -> list[str]:
    """Write the ``total``-image set under ``dest`` (hard-linking files that ``like`` already holds);
    returns the paths. Raises SystemExit if two files share their bytes."""
    items = plan(total)
    for split, c, _, _ in items:
        (dest / split / c).mkdir(parents=True, exist_ok=True)
    todo = []
    for split, c, index, source in items:
        name = Path(split, c, f"{c}.{index:06d}.jpg")
        if like is not None and (like / name).exists() and not (dest / name).exists():
            os.link(like / name, dest / name)
        todo.append((split, c, index, source, str(dest)))
    with Pool(processes) as pool:
        paths = pool.map(_write, todo, chunksize=64)
    digests = {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    if len(digests) != len(paths):
        raise SystemExit(f"{len(paths) - len(digests)} generated images share their bytes with another")
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("total", type=int)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--like", type=Path, help="a smaller set made before: its files are hard-linked")
    args = parser.parse_args(argv)
    paths = make(args.total, args.dest, args.like)
    print(f"{len(paths)} distinct JPEGs under {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
