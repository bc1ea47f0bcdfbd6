"""The row cache on its own (pure: synthetic rows, no images or weights): commits, reads, the
RowWriter's flushing, rows that leave the cache mid-read, and the folders it refuses."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bneck.core.errors import ConfigError
from bneck.core.hashing import RowsDigest, sha256_array
from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.cache.rows import MissingRows, RowCache, RowWriter, remaking_missing, resolve_cache_dir

pytestmark = pytest.mark.pure

SPEC = ExtractorSpec(
    backbone="mobilenet",
    alpha=0.25,
    weights="none",
    weights_sha256="0" * 64,
    layer="x",
    pool="avg",
    input_size=32,
    preprocessing="test",
)


def _rows(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def _shas(n, start=0):
    return [f"{i:064x}" for i in range(start, start + n)]


def test_committed_rows_read_back_in_any_order_and_from_another_process_view(tmp_path):
    cache = RowCache(str(tmp_path / "c"), SPEC)
    rows = _rows(10)
    cache.commit(_shas(6), rows[:6])
    cache.commit(_shas(4, 6), rows[6:])
    wanted = [_shas(10)[i] for i in (9, 0, 3, 3, 7)]
    got = []
    cache.read_rows(wanted, lambda start, block: got.append((start, block)))
    assert np.array_equal(np.concatenate([b for _, b in got]), rows[[9, 0, 3, 3, 7]])
    other = RowCache(str(tmp_path / "c"), SPEC)  # a second process: sees the chunks on refresh
    assert _shas(1)[0] not in other
    other.refresh()
    assert all(sha in other for sha in _shas(10))
    assert cache.digest(_shas(10)) == sha256_array(rows)


def test_the_row_writer_commits_every_n_rows_and_whatever_is_pending_on_exit_even_on_error(tmp_path):
    cache = RowCache(str(tmp_path / "c"), SPEC)
    chunks = lambda: len([n for n in os.listdir(cache.folder) if n.startswith("rows-")])  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        with RowWriter(cache, rows=4, seconds=1e9) as writer:
            writer.add(_shas(3), _rows(3))
            assert chunks() == 0
            writer.add(_shas(2, 3), _rows(2, 1))
            assert chunks() == 1  # 5 rows >= 4: committed
            writer.add(_shas(1, 5), _rows(1, 2))
            raise KeyboardInterrupt  # Ctrl-C: the pending row is still committed
    assert chunks() == 2 and all(sha in cache for sha in _shas(6))


def test_rows_that_leave_the_cache_are_made_again_a_bounded_number_of_times(tmp_path):
    cache = RowCache(str(tmp_path / "c"), SPEC)
    cache.commit(_shas(3), _rows(3))
    for name in os.listdir(cache.folder):
        if name.startswith("rows-"):
            os.remove(os.path.join(cache.folder, name))  # what `cache gc` does meanwhile
    with pytest.raises(MissingRows) as caught:
        cache.read_rows(_shas(3), lambda *_: None)
    assert caught.value.shas == _shas(3)
    made = []

    def remake(shas):
        made.append(list(shas))
        cache.commit(shas, _rows(len(shas)))

    out = []
    remaking_missing(lambda: cache.read_rows(_shas(3), lambda s, b: out.append(b)), remake)
    assert made == [_shas(3)] and len(np.concatenate(out)) == 3
    with pytest.raises(MissingRows):  # rows that never come back: gives up
        remaking_missing(lambda: cache.read_rows(_shas(1, 100), lambda *_: None), lambda shas: None, attempts=2)


def test_rows_digest_in_blocks_equals_the_digest_of_all_rows():
    rows = _rows(7)
    digest = RowsDigest()
    for start in range(0, 7, 3):
        digest.update(rows[start : start + 3])
    assert digest.hexdigest() == sha256_array(rows) == sha256_array(np.asfortranarray(rows))


@pytest.mark.parametrize("make", ["file", "foreign", "inside_input"])
def test_cache_folders_bneck_may_not_use_are_refused(tmp_path, make):
    data = tmp_path / "data"
    data.mkdir()
    path = tmp_path / "cache"
    if make == "file":
        path.write_text("x")
    elif make == "foreign":
        path.mkdir()
        (path / "thesis.tex").write_text("x")
    else:
        path = data / "cache"
    with pytest.raises(ConfigError, match="--cache-dir"):
        resolve_cache_dir(str(path), inputs=[str(data)])


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.asfortranarray(np.arange(24, dtype=np.float32).reshape(4, 6)),  # Fortran order: hashed in C order
        np.arange(24, dtype=np.float32).reshape(4, 6).T,  # a transposed view
        np.arange(40, dtype=np.float64)[::3],  # strided
        np.zeros((0, 5), np.float32),  # empty
        np.float16([1.5, -2.25]),
        np.float32(3.0),  # 0-d
    ],
    ids=["c", "fortran", "transposed", "strided", "empty", "float16", "scalar"],
)
def test_row_checksums_are_the_sha256_of_the_c_order_bytes(array):
    """The checksum definition other tools reproduce: sha256 of the array's bytes in C order, whatever
    the array's layout in memory (hashed from its buffer, never a stale or partial view)."""
    import hashlib

    assert sha256_array(array) == hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    halves = RowsDigest().update(array.reshape(-1)[: array.size // 2]).update(array.reshape(-1)[array.size // 2 :])
    assert halves.hexdigest() == sha256_array(array)
