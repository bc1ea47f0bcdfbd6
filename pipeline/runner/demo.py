"""``bneck demo``: the reference cats-vs-dogs experiment in one command.

Online it downloads the ``cats_and_dogs_filtered`` archive the TensorFlow tutorials
use (2,000 train / 1,000 validation images) and, through stage 1, the VGG16 ImageNet
weights, then runs ``bneck run`` with the reference settings. Offline, ``data`` and
the backbone options point it at local copies.

The archive is checked by its published size; Google publishes no checksum for it,
so the first download's sha256 is recorded beside it and every later download must
match it (``BNECK_DEMO_SHA256`` pins a value of your own).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import urllib.request
import zipfile
from collections.abc import Sequence

from bneck.core.atomic import atomic_open
from bneck.core.errors import DatasetError
from bneck.core.hashing import sha256_file
from bneck.features.cache.rows import default_cache_dir

log = logging.getLogger(__name__)

ARCHIVE_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
ARCHIVE_BYTES = 68_606_236

# The reference experiment (../shared/REFERENCE.md): VGG16 at 150 px, a leaderboard of
# classifiers, then the head made for fine-tuning (gap-dense: pooled input, few weights, so
# the unfrozen top does the learning) fine-tuned with bneck's measured recipe (docs/finetune.md;
# the reference's dense head and SGD 1e-4 on the top block are scripts/configs/reference.toml).
REFERENCE = {
    "out": "runs/demo",
    "extract": {"backbone": "vgg16", "size": 150, "weights": "imagenet"},
    "train": {"classifiers": ["gap-dense", "logreg", "svm", "knn"]},
    "finetune": {"enabled": True},
}


def download_reference(cache_dir: str | None = None, verbose: bool = True) -> str:
    """Return the extracted ``cats_and_dogs_filtered`` folder, downloading it once.

    Raises DatasetError when it cannot be downloaded or does not check out.
    """
    root = os.path.join(cache_dir or default_cache_dir(), "datasets")
    folder = os.path.join(root, "cats_and_dogs_filtered")
    if os.path.isdir(os.path.join(folder, "train")) and os.path.isdir(os.path.join(folder, "validation")):
        return folder
    os.makedirs(root, exist_ok=True)
    archive = os.path.join(root, "cats_and_dogs_filtered.zip")
    if verbose:
        log.info(f"downloading {ARCHIVE_URL} ({ARCHIVE_BYTES / 1e6:.0f} MB)")
    try:
        urllib.request.urlretrieve(ARCHIVE_URL, archive + ".part")
    except OSError as exc:
        raise DatasetError(
            f"cannot download the demo data from {ARCHIVE_URL} ({exc}). Offline, run the demo "
            "on a local copy: `bneck demo --data DATA_DIR` with DATA_DIR holding train/ and "
            "validation/ (test/ optional) class folders, plus --weights FILE for the backbone "
            "(e.g. --backbone mobilenet --alpha 0.25 --size 224 --weights "
            "mobilenet_2_5_224_tf_no_top.h5)."
        ) from None
    check_archive(archive + ".part", os.path.join(root, "cats_and_dogs_filtered.sha256"))
    os.replace(archive + ".part", archive)
    with zipfile.ZipFile(archive) as zf:
        staging = folder + ".tmp"
        shutil.rmtree(staging, ignore_errors=True)
        zf.extractall(staging)
    os.replace(os.path.join(staging, "cats_and_dogs_filtered"), folder)
    shutil.rmtree(staging, ignore_errors=True)
    return folder


def check_archive(path: str, record: str) -> str:
    """Check the archive's size and sha256 (pinned, or recorded at first download); returns it."""
    size = os.path.getsize(path)
    if size != ARCHIVE_BYTES:
        os.remove(path)
        raise DatasetError(
            f"the downloaded demo archive has {size:,} bytes, not the published "
            f"{ARCHIVE_BYTES:,}; it was deleted. Try again, or use --data."
        )
    sha = sha256_file(path)
    expected = os.environ.get("BNECK_DEMO_SHA256")
    if expected is None and os.path.isfile(record):
        with open(record) as handle:
            expected = handle.read().strip()
    if expected and sha != expected:
        os.remove(path)
        raise DatasetError(
            f"the downloaded demo archive has sha256 {sha}, not the expected "
            f"{expected} ({'BNECK_DEMO_SHA256' if 'BNECK_DEMO_SHA256' in os.environ else record}); "
            "it was deleted."
        )
    with atomic_open(record) as handle:
        handle.write(sha + "\n")
    return sha


def demo(
    data: str | None = None,
    out: str | None = None,
    backbone: str | None = None,
    alpha: float | None = None,
    size: int | None = None,
    weights: str | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    verbose: bool = True,
):
    """Run the reference experiment; returns the RunResult (see ``pipeline.run``)."""
    from bneck.pipeline.runner.compose import run

    base = copy.deepcopy(REFERENCE)
    if backbone is not None:  # another backbone: its own default size unless given
        base["extract"] = {"backbone": backbone}
    for key, value in (("alpha", alpha), ("size", size), ("weights", weights)):
        if value is not None:
            base["extract"][key] = value
    data = data or download_reference(verbose=verbose)
    return run(None, overrides=overrides, verbose=verbose, base=base, data=data, out=out, seed=seed)
