"""Image discovery, both layouts, and every dataset mistake's message."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import pytest

from bneck.core.errors import ConfigError, DatasetError
from bneck.features.images.dataset import discover
from tests.generated import make_images

pytestmark = pytest.mark.pure


@functools.cache
def _image_bytes() -> bytes:
    """The bytes of one generated JPEG (cat.0.jpg), made once per process."""
    with tempfile.TemporaryDirectory() as tmp:
        return (make_images(Path(tmp), 1, splits=("train",)) / "train" / "cats" / "cat.0.jpg").read_bytes()


def _touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(_image_bytes())


def test_split_layout_sorted_classes_hidden_and_extensions(tmp_path):
    for split in ("train", "validation"):
        _touch_images(tmp_path / split / "dogs", ["b.JPG", "a.jpeg", "c.PnG", "notes.txt", ".hidden.jpg"])
        _touch_images(tmp_path / split / "cats", ["x.webp", "y.bmp", "z.gif"])
        _touch_images(tmp_path / split / ".ipynb_checkpoints", ["a.jpg"])
        (tmp_path / split / "cats" / ".DS_Store").write_bytes(b"x")
    ds = discover(tmp_path)
    assert ds.layout == "splits" and ds.class_names == ["cats", "dogs"]
    assert list(ds.splits) == ["train", "validation"]
    paths = [r.path for r in ds.splits["train"]]
    assert paths == [
        "train/cats/x.webp",
        "train/cats/y.bmp",
        "train/cats/z.gif",
        "train/dogs/a.jpeg",
        "train/dogs/b.JPG",
        "train/dogs/c.PnG",
    ]
    assert [r.label for r in ds.splits["train"]] == [0, 0, 0, 1, 1, 1]
    assert list(discover(tmp_path, splits=["validation"]).splits) == ["validation"]


def test_class_mismatch_lists_the_difference(tmp_path):
    _touch_images(tmp_path / "train" / "cats", ["a.jpg"])
    _touch_images(tmp_path / "train" / "dogs", ["a.jpg"])
    _touch_images(tmp_path / "validation" / "cats", ["a.jpg"])
    _touch_images(tmp_path / "validation" / "birds", ["a.jpg"])
    with pytest.raises(DatasetError) as err:
        discover(tmp_path)
    text = str(err.value)
    assert "only in train: ['dogs']" in text and "only in validation: ['birds']" in text


@pytest.mark.parametrize("case", ["missing", "no_classes", "empty_class", "no_images", "bad_split_name"])
def test_dataset_mistakes_are_clear(tmp_path, case):
    if case == "missing":
        root, expect = tmp_path / "nope", "data folder not found"
    elif case == "no_classes":
        (tmp_path / "train").mkdir()
        root, expect = tmp_path, "no class folders"
    elif case == "empty_class":
        _touch_images(tmp_path / "train" / "cats", ["a.jpg"])
        (tmp_path / "train" / "dogs").mkdir()
        root, expect = tmp_path, "empty class folder(s)"
    elif case == "no_images":
        root, expect = tmp_path, "no images found"
    else:
        _touch_images(tmp_path / "train" / "cats", ["a.jpg"])
        with pytest.raises(ConfigError, match="--splits must name splits"):
            discover(tmp_path, splits=["training"])
        return
    with pytest.raises(DatasetError) as err:
        discover(root)
    assert expect in str(err.value) and str(root) in str(err.value)


def _single_root(tmp_path, counts):
    for cls, n in counts.items():
        _touch_images(tmp_path / cls, [f"{cls}{i}.jpg" for i in range(n)])
    return tmp_path


def test_single_root_split_is_stratified_deterministic_and_recorded(tmp_path):
    root = _single_root(tmp_path, {"a": 20, "b": 40, "c": 10})
    ds = discover(root, split="0.7,0.15,0.15", seed=3)
    assert ds.layout == "single-root" and ds.class_names == ["a", "b", "c"]
    counts = {s: [sum(r.label == k for r in recs) for k in range(3)] for s, recs in ds.splits.items()}
    assert counts == {"train": [14, 28, 7], "validation": [3, 6, 2], "test": [3, 6, 1]}
    all_paths = [r.path for recs in ds.splits.values() for r in recs]
    assert len(all_paths) == len(set(all_paths)) == 70
    again = discover(root, split="0.7,0.15,0.15", seed=3)
    assert {s: [r.path for r in v] for s, v in again.splits.items()} == {
        s: [r.path for r in v] for s, v in ds.splits.items()
    }
    other = discover(root, split="0.7,0.15,0.15", seed=4)
    assert [r.path for r in other.splits["test"]] != [r.path for r in ds.splits["test"]]
    assert ds.split_spec["fractions"] == [0.7, 0.15, 0.15] and ds.split_spec["seed"] == 3


def test_single_root_exclude_and_adding_an_image_moves_little(tmp_path):
    root = _single_root(tmp_path, {"a": 30, "b": 30, "big": 50})
    ds = discover(root, exclude=["big"])
    assert ds.class_names == ["a", "b"] and ds.excluded_classes == ["big"]
    before = {r.path: s for s, recs in ds.splits.items() for r in recs}
    _touch_images(tmp_path / "a", ["new.jpg"])
    after = {r.path: s for s, recs in discover(root, exclude=["big"]).splits.items() for r in recs}
    moved = [p for p in before if before[p] != after[p]]
    assert len(moved) <= 3  # a seeded shuffle would move about half of the 60
    with pytest.raises(ConfigError, match="'nope'"):
        discover(root, exclude=["nope"])


@pytest.mark.parametrize("bad", ["0.5,0.5", "0.7,0.2,0.2", "a,b,c", "0,0.5,0.5", "-0.1,0.6,0.5"])
def test_bad_split_fractions(tmp_path, bad):
    root = _single_root(tmp_path, {"a": 5, "b": 5})
    with pytest.raises(ConfigError, match="--split must be three"):
        discover(root, split=bad)


def test_split_given_for_split_layout_is_an_error(tmp_path):
    _touch_images(tmp_path / "train" / "cats", ["a.jpg"])
    with pytest.raises(ConfigError, match="single-root"):
        discover(tmp_path, split="0.7,0.15,0.15")


def test_too_small_class_for_three_splits(tmp_path):
    root = _single_root(tmp_path, {"a": 10, "b": 2})
    with pytest.raises(DatasetError, match="class 'b' has 2"):
        discover(root)


def test_symlink_loop_does_not_trap_discovery(tmp_path):
    _touch_images(tmp_path / "train" / "cats", ["a.jpg"])
    os.symlink(tmp_path / "train" / "cats", tmp_path / "train" / "cats" / "loop")
    ds = discover(tmp_path)
    assert [r.path for r in ds.splits["train"]] == ["train/cats/a.jpg"]
