"""Real feature files for stage 2 tests, extracted once per session with real MobileNet weights."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageOps

from bneck.features import extract
from tests.conftest import MOBILENET, copy_subset


@pytest.fixture(scope="session")
def features_dir(tmp_path_factory):
    """Cats vs dogs, 40 real images per class in train/validation/test, MobileNet-0.25 features."""
    root = tmp_path_factory.mktemp("stage2")
    data = copy_subset(root / "data", 40)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **MOBILENET)
    return root / "features"


@pytest.fixture(scope="session")
def image_root(features_dir):
    return features_dir.parent / "data"


@pytest.fixture(scope="session")
def multiclass_features_dir(tmp_path_factory):
    """Three classes: cats, dogs, and "gray" (grayscale negatives of other real photos)."""
    root = tmp_path_factory.mktemp("stage2_multi")
    data = copy_subset(root / "data", 15)
    donors = copy_subset(root / "donors", 15, offset=300)
    for split in ("train", "validation", "test"):
        (data / split / "gray").mkdir()
        for i, src in enumerate(sorted((donors / split).glob("*/*.jpg"))[::2]):
            ImageOps.invert(Image.open(src).convert("L")).save(data / split / "gray" / f"g{i}.jpg")
    shutil.rmtree(donors)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, pool="avg", **MOBILENET)
    return root / "features"
