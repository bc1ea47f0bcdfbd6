"""One finiteness rule for every row written anywhere (issue 27): rows holding NaN or infinity are
refused before they are stored in a feature file, a cache chunk or a shard, and a chunk forged to
hold them (checksums right) is damaged for `cache verify`, `gc` and every reader."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest

from bneck.core.errors import FeatureFileError
from bneck.core.hashing import sha256_array
from bneck.features import extract, read_features
from bneck.features.backbones.resolve import resolve_spec
from bneck.features.cache.chunks import _fill_chunk, chunk_files, write_rows_file
from bneck.features.cache.maintenance import collect_garbage
from bneck.features.cache.rows import RowCache
from bneck.features.featurefile.format import SplitContent, write_split_file
from bneck.pipeline.cli import main

BAD = [np.nan, np.inf, -np.inf]


def _rows(bad_value, n=4, where=2):
    rows = np.random.default_rng(0).random((n, 3, 3, 8), dtype=np.float32)
    rows[where, 1, 2, 5] = bad_value
    return rows


@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
def test_a_cache_chunk_or_shard_with_a_nonfinite_row_is_never_written(tmp_path, value):
    path = tmp_path / "rows-1.h5"
    with pytest.raises(FeatureFileError, match=r"1 feature row\(s\) holding NaN or infinity \(first: row 2\)"):
        write_rows_file(str(path), "k" * 64, ["a" * 64] * 4, _rows(value), attrs={"shard": 1})
    assert not path.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
def test_a_feature_file_with_a_nonfinite_row_is_never_written(tmp_path, value):
    content = SplitContent("train", [f"c/{i}.jpg" for i in range(4)], [0] * 4, ["a" * 64] * 4, [])
    with pytest.raises(FeatureFileError, match=r"first: row 3\)"):
        write_split_file(
            str(tmp_path / "train.h5"),
            content,
            {},
            (3, 3, 8),
            "float32",
            lambda sink: (sink(0, _rows(1.0)[:2]), sink(2, _rows(value, 2, 1))),
        )
    assert not (tmp_path / "train.h5").exists()


def _forge(path: str, key: str, shas: list[str], rows: np.ndarray) -> None:
    """A chunk as an attacker (or a broken writer) makes it: every checksum right, no finiteness rule."""
    with h5py.File(path, "w") as f:
        _fill_chunk(f, key, np.array(shas, dtype="S64"))
        f.create_dataset("features", data=rows)
        f.attrs["features_sha256"] = sha256_array(rows)
        f.attrs["complete"] = True


@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
def test_a_chunk_forged_with_nonfinite_rows_is_damaged_for_every_reader(tmp_path, tiny, tiny_data, value, capsys):
    cache = tmp_path / "cache"
    extract(str(tiny_data), str(tmp_path / "o1"), cache_dir=str(cache), verbose=False, **tiny)
    folder = RowCache(str(cache), resolve_spec(**tiny)).folder
    chunk = chunk_files(folder)[0]
    with h5py.File(chunk, "r") as f:
        shas, rows = [s.decode() for s in f["sha256"][()]], f["features"][()]
    rows[0, 0, 0, 0] = value
    os.remove(chunk)
    _forge(os.path.join(folder, f"rows-{time.time_ns()}-forged.h5"), os.path.basename(folder), shas, rows)
    capsys.readouterr()
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 1
    assert "holds rows of NaN or infinity" in capsys.readouterr().out
    with pytest.raises(FeatureFileError, match="hold NaN or infinity"):  # never copied into a feature file
        extract(str(tiny_data), str(tmp_path / "o2"), cache_dir=str(cache), verbose=False, **tiny)
    collect_garbage(str(cache))  # gc drops it; the next extraction recomputes the rows
    extract(str(tiny_data), str(tmp_path / "o3"), cache_dir=str(cache), verbose=False, **tiny)
    for split in ("train", "validation", "test"):
        assert np.isfinite(read_features(str(tmp_path / "o3" / f"{split}.h5")).features).all()
