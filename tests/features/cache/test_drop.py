"""One copy of the rows (issue 28): ``extract --no-keep-cache`` and ``bneck cache rm`` remove the cache's
copy, the split files keep theirs; an entry another process uses is kept."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from bneck.features import extract, read_features
from bneck.features.cache.maintenance import drop_entry, list_entries
from tests.conftest import ROOT

pytestmark = pytest.mark.pure
SPLITS = ("train", "validation", "test")


def _rows(out):
    return {s: read_features(str(out / f"{s}.h5")) for s in SPLITS}


def test_no_keep_cache_leaves_one_copy_and_the_split_files_whole(tiny, tiny_data, tmp_path):
    kept = extract(tiny_data, tmp_path / "kept", cache_dir=tmp_path / "c1", verbose=False, **tiny)
    assert kept.cache_dropped == -1 and len(list_entries(str(tmp_path / "c1"))) == 1
    entry_bytes = list_entries(str(tmp_path / "c1"))[0].bytes
    one = extract(tiny_data, tmp_path / "one", cache_dir=tmp_path / "c2", keep_cache=False, verbose=False, **tiny)
    assert one.cache_dropped is not None and one.cache_dropped >= entry_bytes * 0.5
    assert list_entries(str(tmp_path / "c2")) == []  # the rows live only in the split files now
    for split, want in _rows(tmp_path / "kept").items():
        got = _rows(tmp_path / "one")[split]
        assert got.sha256 == want.sha256 and np.array_equal(got.features, want.features)
    from bneck.pipeline import train

    board = train(tmp_path / "one", ["logreg"], tmp_path / "models", verbose=False)
    assert board.results[0].accuracy("test") is not None
    again = extract(tiny_data, tmp_path / "one", cache_dir=tmp_path / "c2", keep_cache=False, verbose=False, **tiny)
    assert again.forward_images == 36  # said so: extracting them again computes them again
    assert all(
        np.array_equal(_rows(tmp_path / "one")[s].features, _rows(tmp_path / "kept")[s].features) for s in SPLITS
    )


def _holding(folder):
    """Another process that uses the entry as extraction does: a shared lock on its ``.inuse`` file."""
    code = (
        "import fcntl, sys, time; from bneck.features.cache.in_use import open_in_use_file; "
        "h = open_in_use_file(sys.argv[1]); fcntl.flock(h, fcntl.LOCK_SH); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, folder], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_an_entry_in_use_by_another_process_is_kept(tiny, tiny_data, tmp_path):
    extract(tiny_data, tmp_path / "out", cache_dir=tmp_path / "c", verbose=False, **tiny)
    (entry,) = list_entries(str(tmp_path / "c"))
    holder = _holding(entry.folder)
    try:
        start = time.monotonic()
        assert drop_entry(entry.folder, wait_s=0.5) is None and time.monotonic() - start < 5
        assert len(list_entries(str(tmp_path / "c"))) == 1
        cli = subprocess.run(
            [sys.executable, "-m", "bneck", "cache", "rm", entry.key[:10], "--cache-dir", str(tmp_path / "c")],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert cli.returncode == 1 and "another process is using it" in cli.stdout
    finally:
        holder.kill()
        holder.wait()
    assert drop_entry(entry.folder) == entry.bytes and list_entries(str(tmp_path / "c")) == []


def test_cache_rm_takes_one_key_or_unique_prefix_and_says_what_it_removed(tiny, tiny_data, tmp_path):
    cache = tmp_path / "c"
    extract(tiny_data, tmp_path / "a", cache_dir=cache, verbose=False, **tiny)
    extract(tiny_data, tmp_path / "b", cache_dir=cache, verbose=False, pool="avg", **tiny)
    keys = sorted(e.key for e in list_entries(str(cache)))

    def rm(key):
        return subprocess.run(
            [sys.executable, "-m", "bneck", "cache", "rm", key, "--cache-dir", str(cache)],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip

    for wrong, matches in (("zzzz", 0), ("", 0)):  # an empty key removes nothing
        done = rm(wrong)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"which matches {matches} of the 2 entries" in done.stderr and "`bneck cache ls`" in done.stderr
    done = rm(keys[0][:12])
    assert done.returncode == 0 and f"removed {keys[0][:16]} (36 rows" in done.stdout
    assert [e.key for e in list_entries(str(cache))] == keys[1:]
    assert read_features(str(tmp_path / "a" / "train.h5")).features.shape[0] == 12  # its own copy


def test_cache_rm_and_no_keep_cache_leave_entries_bneck_did_not_write(tiny, tiny_data, tmp_path):
    """An entry whose meta.json names another key is not one the cache wrote (gc leaves it too)."""
    cache = tmp_path / "c"
    extract(tiny_data, tmp_path / "a", cache_dir=cache, verbose=False, **tiny)
    forged = cache / "features" / ("a" * 64)
    forged.mkdir()
    (forged / "meta.json").write_text('{"extractor_key": "other"}')
    (forged / "rows-123-1-abc.h5").write_text("somebody's data")
    done = subprocess.run(
        [sys.executable, "-m", "bneck", "cache", "rm", "aaaa", "--cache-dir", str(cache)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "is not an entry bneck wrote" in done.stderr
    assert drop_entry(str(forged)) is None
    assert (forged / "rows-123-1-abc.h5").read_text() == "somebody's data" and (forged / "meta.json").exists()
