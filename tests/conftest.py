"""Shared fixtures: the real images and real MobileNet weights from ../shared/data.

``KERAS_HOME`` points at a folder where the shared weights file is linked under its
official name, so ``weights="imagenet"`` resolves offline exactly as on a user's
machine with a warm Keras cache.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BNECK_SHARED", ROOT.parent / "shared")).resolve()
DATA = SHARED / "data" / "cats_and_dogs_small"
MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_WEIGHTS = SHARED / "data" / "weights" / MOBILENET_FILE

# The real extractor used across the suite: MobileNet v1 alpha 0.25, real ImageNet weights.
MOBILENET = dict(backbone="mobilenet", alpha=0.25, size=224, weights="imagenet")


def pytest_configure(config):
    if not DATA.is_dir() or not MOBILENET_WEIGHTS.is_file():
        raise pytest.UsageError(f"the shared test data is missing: expected {DATA} and "
                                f"{MOBILENET_WEIGHTS} (set BNECK_SHARED to the shared/ folder)")


@pytest.fixture(scope="session", autouse=True)
def keras_home(tmp_path_factory):
    """A Keras home whose models/ holds the shared weights under their official name."""
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    os.symlink(MOBILENET_WEIGHTS, home / "models" / MOBILENET_FILE)
    old = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("KERAS_HOME", None)
    else:
        os.environ["KERAS_HOME"] = old


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own default cache folder and its own record of checked models
    ($BNECK_STATE), so no test sees another's rows or checks."""
    cache = tmp_path / "bneck-cache"
    monkeypatch.setenv("BNECK_CACHE", str(cache))
    monkeypatch.setenv("BNECK_STATE", str(tmp_path / "bneck-state"))
    return cache


def copy_subset(dest: Path, per_class: int, splits=("train", "validation", "test"),
                offset: int = 0) -> Path:
    """Copy ``per_class`` real images per class and split into ``dest``; returns ``dest``."""
    for split in splits:
        for cls in ("cats", "dogs"):
            src = DATA / split / cls
            names = sorted(os.listdir(src), key=lambda n: int(n.split(".")[1]))
            out = dest / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for name in names[offset:offset + per_class]:
                shutil.copy(src / name, out / name)
    return dest


@pytest.fixture
def small_data(tmp_path) -> Path:
    """train/validation/test with 6 real images per class."""
    return copy_subset(tmp_path / "data", 6)
