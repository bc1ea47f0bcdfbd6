"""Reading a feature file trusts nothing: damaged, partial and edited files are refused clearly."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from bneck.features import FeatureFileError, extract, read_features, read_summary

pytestmark = pytest.mark.pure


@pytest.fixture
def feature_file(tiny_data, tmp_path, tiny):
    extract(tiny_data, tmp_path / "out", splits=["test"], verbose=False, **tiny)
    return tmp_path / "out" / "test.h5"


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def test_valid_file_reads_and_summarises(feature_file):
    f = read_features(str(feature_file))
    summary = read_summary(str(feature_file))
    assert summary["features_shape"] == list(f.features.shape)
    assert summary["extractor_key"] == f.extractor_key


@pytest.mark.parametrize(
    "damage,message",
    [
        ("flip_feature", "checksum"),
        ("no_complete", "incomplete"),
        ("old_schema", "schema_version"),
        ("edited_attr", "do not match its extractor_key"),
        ("dropped_rows", "does not hold bneck's datasets"),
        ("truncated", "cannot be read"),
        ("missing", "not found"),
    ],
)
def test_damaged_files_are_refused_with_a_rebuild_hint(feature_file, damage, message):
    path = str(feature_file)
    if damage == "flip_feature":
        _edit(path, lambda f: f["features"].__setitem__((0, 0, 0, 0), f["features"][0, 0, 0, 0] + 1.0))
    elif damage == "no_complete":
        _edit(path, lambda f: f.attrs.__delitem__("complete"))
    elif damage == "old_schema":
        _edit(path, lambda f: f.attrs.__setitem__("schema_version", 0))
    elif damage == "edited_attr":
        _edit(path, lambda f: f.attrs.__setitem__("layer", "conv_pw_1_relu"))
    elif damage == "dropped_rows":

        def drop(f):
            labels = f["labels"][()]
            del f["labels"]
            f.create_dataset("labels", data=labels[:-1])

        _edit(path, drop)
    elif damage == "truncated":
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "missing":
        os.remove(path)
    with pytest.raises(FeatureFileError) as err:
        read_features(path)
    assert message in str(err.value) and path in str(err.value)
    if damage != "missing":
        assert "bneck extract" in str(err.value)


def test_rerun_repairs_a_damaged_file_from_the_cache(tiny_data, tmp_path, tiny, feature_file):
    good = read_features(str(feature_file)).features.copy()
    _edit(str(feature_file), lambda f: f["features"].__setitem__((1, 0, 0, 0), 99.0))
    report = extract(tiny_data, tmp_path / "out", splits=["test"], verbose=False, **tiny)
    assert report.forward_images == 0
    np.testing.assert_array_equal(read_features(str(feature_file)).features, good)


def test_no_temporaries_left_after_success(feature_file):
    assert sorted(os.listdir(feature_file.parent)) == [".bneck-folder.json", "test.h5"]
