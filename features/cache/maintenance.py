"""Looking after the shared cache: list its entries, tidy them (``bneck cache gc``), check them.

``gc`` takes each entry's lock while it works, so it never changes chunks a reader is
reading; it merges chunks (readers look again when theirs are gone) and, with
``--older-than``, removes only entries no running process holds in use (the shared
lock every ``RowCache`` keeps on ``.inuse``). It removes only names the cache makes.
Any number of gcs may run at once, and alongside any number of extractions.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import h5py
import numpy as np
from filelock import FileLock

from bneck.core.atomic import atomic_target, stale_temporaries
from bneck.core.files import is_regular, open_regular, read_whole
from bneck.core.hashing import RowsDigest
from bneck.features.cache.in_use import fcntl, open_in_use_file
from bneck.features.cache.rows import (
    CHUNK_PREFIX,
    KEY_NAME,
    LOCK_TIMEOUT_S,
    RowCache,
    _chunk_shas,
    _fill_chunk,
    check_cache_dir,
    chunk_files,
    read_rows_file,
)
from bneck.features.featurefile.storage import is_rounded, row_dataset_options


@contextmanager
def _unused(folder: str):
    """Yield True while holding the entry's ``.inuse`` lock exclusively, False when a process uses it
    (or its ``.inuse`` is not a regular file: then nothing can tell, and the entry is kept)."""
    if fcntl is None:
        yield True
        return
    handle = open_in_use_file(folder)
    if handle is None:
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _read_meta(meta_path: str):
    """An entry's meta.json, parsed ({} when damaged or not a file the cache made: `verify_cache` reports
    it); raises FileNotFoundError or NotADirectoryError when there is none."""
    try:
        with open_regular(meta_path, follow_symlinks=False) as handle:
            return json.loads(read_whole(handle, meta_path, 1 << 20))
    except (FileNotFoundError, NotADirectoryError):
        raise
    except (ValueError, OSError, RecursionError):
        return {}


@dataclass
class CacheEntry:
    """One extractor's rows in the cache, as listed by ``bneck cache ls``."""

    key: str
    folder: str
    meta: dict
    rows: int
    chunks: int
    bytes: int
    last_used: float


def list_entries(cache_dir: str) -> list[CacheEntry]:
    """Return every extractor entry in ``cache_dir`` (empty list if there is none)."""
    root = os.path.join(cache_dir, "features")
    if not os.path.isdir(root):
        return []
    entries = []
    for key in sorted(os.listdir(root)):
        folder = os.path.join(root, key)
        meta_path = os.path.join(folder, "meta.json")
        if not KEY_NAME.match(key) or os.path.islink(folder):  # not a folder the cache made
            continue
        try:
            meta = _read_meta(meta_path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            chunks = chunk_files(folder)
            shas = set()
            for path in chunks:
                shas.update(_chunk_shas(path, key)[0] or ())
            entries.append(
                CacheEntry(
                    key, folder, meta, len(shas), len(chunks), _folder_bytes(folder), os.path.getmtime(meta_path)
                )
            )
        except FileNotFoundError:  # another process (gc) removed it meanwhile
            continue
    return entries


def _folder_bytes(folder: str) -> int:
    total = 0
    for name in os.listdir(folder):
        try:
            total += os.path.getsize(os.path.join(folder, name))
        except FileNotFoundError:
            pass
    return total


def collect_garbage(cache_dir: str, older_than_days: float | None = None) -> dict:
    """Tidy the cache; returns counts of what was removed and merged.

    Removes temporaries of dead processes and unreadable or corrupt chunks, merges
    each entry's chunks into one (dropping duplicate rows), and with
    ``older_than_days`` deletes entries not used for that long. Only in a folder that
    is a bneck cache (``check_cache_dir``), and only in entries whose ``meta.json``
    names their own key; raises ConfigError for any other folder.
    """
    check_cache_dir(cache_dir)
    stats = {
        "temporaries": 0,
        "bad_chunks": 0,
        "merged_chunks": 0,
        "entries_removed": 0,
        "entries_in_use": 0,
        "bytes_before": 0,
        "bytes_after": 0,
    }
    entries = list_entries(cache_dir)
    stats["bytes_before"] = sum(e.bytes for e in entries)
    now = time.time()
    for entry in entries:
        if entry.meta.get("extractor_key") != entry.key:
            continue  # not an entry the cache wrote (or its meta.json is damaged): left alone
        with FileLock(os.path.join(entry.folder, ".lock"), timeout=LOCK_TIMEOUT_S):
            meta = os.path.join(entry.folder, "meta.json")
            if not os.path.exists(meta):  # removed meanwhile by another gc
                continue
            if older_than_days is not None and now - os.path.getmtime(meta) > older_than_days * 86400:
                with _unused(entry.folder) as unused:
                    if unused:
                        _remove_entry(entry.folder)
                        stats["entries_removed"] += 1
                        continue
                    stats["entries_in_use"] += 1
            for tmp in stale_temporaries(entry.folder):
                stats["temporaries"] += _remove_if_there(tmp)
            _merge_chunks(entry, stats)
    stats["bytes_after"] = sum(e.bytes for e in list_entries(cache_dir))
    return stats


def _meta_key(meta_path: str) -> str | None:
    """The extractor key an entry's meta.json names (None when it cannot be read as the cache writes it)."""
    try:
        meta = _read_meta(meta_path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return meta.get("extractor_key") if isinstance(meta, dict) else None


def drop_entry(folder: str, wait_s: float = 10.0) -> int | None:
    """Remove the cache entry at ``folder`` (one extractor's rows) unless another process uses it; returns
    the bytes freed (0 when there is no entry), or None when it is still in use after ``wait_s`` or is not
    an entry the cache wrote (its meta.json names another key): kept.

    The rows are the cache's copy: feature files already written hold their own, so nothing that
    was extracted is lost; a later extraction of the same images computes them again.
    """
    meta = os.path.join(folder, "meta.json")
    if not os.path.isfile(meta):
        return 0
    if os.path.islink(folder) or _meta_key(meta) != os.path.basename(folder):
        return None  # not an entry the cache wrote: left alone, as gc leaves it
    freed = _folder_bytes(folder)
    deadline = time.monotonic() + wait_s
    with FileLock(os.path.join(folder, ".lock"), timeout=LOCK_TIMEOUT_S):
        while True:  # a Ray actor being stopped may hold the entry for a moment
            with _unused(folder) as unused:
                if unused:
                    _remove_entry(folder)
                    return freed
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)


def _merge_chunks(entry: CacheEntry, stats: dict) -> None:
    """Rewrite an entry's chunks as one, one chunk in memory at a time."""
    plan, seen, layout = [], set(), None  # (path, kept row indices); the entry's (row shape, dtype)
    for path in chunk_files(entry.folder):
        chunk_shas, _ = read_rows_file(path, entry.key, entry.meta.get("dtype"))
        if chunk_shas is not None:
            with h5py.File(path, "r") as f:
                layout = layout or (f["features"].shape[1:], f["features"].dtype)
                if (f["features"].shape[1:], f["features"].dtype) != layout:  # not this entry's rows
                    chunk_shas = None
        if chunk_shas is None:
            os.remove(path)
            stats["bad_chunks"] += 1
            continue
        keep = [i for i, s in enumerate(chunk_shas) if s not in seen]
        seen.update(chunk_shas)
        plan.append((path, keep, [chunk_shas[i] for i in keep]))
    if len(plan) <= 1:
        return
    row_shape, dtype = layout
    total = sum(len(keep) for _, keep, _ in plan)
    name = f"{CHUNK_PREFIX}{time.time_ns()}-{os.getpid()}-merged.h5"
    with atomic_target(os.path.join(entry.folder, name)) as tmp:
        with h5py.File(tmp, "w") as out:
            shuffle = is_rounded(entry.meta.get("dtype"))
            options = row_dataset_options(total, row_shape, dtype.itemsize, shuffle)
            feats = out.create_dataset("features", shape=(total,) + row_shape, dtype=dtype, **options)
            digest, start = RowsDigest(), 0
            for path, keep, _ in plan:
                rows = np.ascontiguousarray(RowCache._load_chunk(path, dtype=entry.meta.get("dtype"))[keep])
                feats[start : start + len(rows)] = rows
                digest.update(rows)
                start += len(rows)
            _fill_chunk(out, entry.key, np.array([s for *_, shas in plan for s in shas], dtype="S64"))
            out.attrs["features_sha256"] = digest.hexdigest()
            out.attrs["complete"] = True  # written last
    for path, _, _ in plan:
        os.remove(path)
    stats["merged_chunks"] += len(plan)


def _remove_if_there(path: str) -> int:
    try:
        os.remove(path)
        return 1
    except FileNotFoundError:
        return 0


def _remove_entry(folder: str) -> None:
    """Remove an entry's meta.json, chunks and temporaries: only names the cache makes.

    The ``.lock`` file stays (a process may be waiting on it), and so does anything
    the cache did not write.
    """
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not (is_regular(path) or os.path.islink(path)):  # a folder or FIFO under a cache name: not ours
            continue
        if (
            name == "meta.json"
            or (name.startswith(CHUNK_PREFIX) and name.endswith(".h5"))
            or name in (os.path.basename(p) for p in stale_temporaries(folder))
        ):
            _remove_if_there(path)
