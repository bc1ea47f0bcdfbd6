"""The shared feature cache: rows stored by (extractor key, image sha256).

Layout under the cache folder::

    features/<extractor key>/meta.json        what the key stands for
    features/<extractor key>/rows-*.h5         committed chunks: sha256 (n,), features (n, ...)
    features/<extractor key>/.lock            taken while reading rows and while gc rewrites

Every chunk is written atomically by the process that computed it, so any number of
processes can add rows at once without coordination; an interrupted run keeps all
chunks it committed. Because rows are found by image content, renamed or moved
images and other projects with overlapping images reuse them.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Optional

import h5py
import numpy as np
from filelock import FileLock

from .atomic import atomic_target, stale_temporaries
from .key import SCHEMA_VERSION, ExtractorSpec

CHUNK_PREFIX = "rows-"
LOCK_TIMEOUT_S = 600


def default_cache_dir() -> str:
    """Return ``$BNECK_CACHE`` or ``~/.cache/bneck``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("BNECK_CACHE") or "~/.cache/bneck"))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _chunk_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.startswith(CHUNK_PREFIX) and n.endswith(".h5"))


def _chunk_shas(path: str, key: str) -> tuple[Optional[list[str]], Optional[str]]:
    """Return (the chunk's sha256 list, None), or (None, what is wrong with the chunk).

    Checks the ``complete`` flag, the extractor key and schema version it was written
    for, and the checksum of its sha256 list; the features' own checksum is checked
    when they are read (``RowCache._load_chunk``).
    """
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                return None, "no 'complete' flag (an interrupted or damaged write)"
            if f.attrs.get("extractor_key") != key:
                return None, f"written for extractor {str(f.attrs.get('extractor_key'))[:12]}, not {key[:12]}"
            if f.attrs.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
                return None, (f"schema_version {f.attrs.get('schema_version')!r}, this bneck "
                              f"writes {SCHEMA_VERSION}")
            raw = f["sha256"][()]
            expected = f.attrs.get("sha256_sha256")
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        return None, f"unreadable ({str(exc)[:80] or type(exc).__name__}); truncated?"
    if expected is not None and _digest(raw) != expected:
        return None, "its list of image hashes fails its checksum (damaged bytes)"
    return [s.decode("ascii") for s in raw], None


def write_rows_file(path: str, key: str, shas: list[str], feats: np.ndarray, attrs: Optional[dict] = None) -> None:
    """Write rows (a cache chunk, or a Ray shard) atomically, with their checksums and ``attrs``."""
    with atomic_target(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _fill_chunk(f, key, np.array(shas, dtype="S64"))
            f.create_dataset("features", data=feats)
            f.attrs["features_sha256"] = _digest(feats)
            for name, value in (attrs or {}).items():
                f.attrs[name] = value
            f.attrs["complete"] = True  # written last


def read_rows_file(path: str, key: str) -> tuple[Optional[list[str]], Optional[str]]:
    """Return (the image hashes of a rows file, None) after reading it in full, or (None, problem).

    Checks the flags and the hash list (``_chunk_shas``), the features' checksum, and
    that there are as many rows as hashes.
    """
    shas, problem = _chunk_shas(path, key)
    if shas is None:
        return None, problem
    try:
        rows = len(RowCache._load_chunk(path))
    except CorruptChunk:
        return None, "its features are unreadable or fail their checksum (damaged bytes)"
    if rows != len(shas):
        return None, "holds a different number of rows and hashes"
    return shas, None


def _fill_chunk(f: h5py.File, key: str, shas: np.ndarray) -> None:
    f.create_dataset("sha256", data=shas)
    f.attrs["sha256_sha256"] = _digest(shas)
    f.attrs["extractor_key"] = key
    f.attrs["schema_version"] = SCHEMA_VERSION


def _warn_damaged(path: str, problem: str) -> None:
    print(f"bneck: warning: ignoring damaged cache chunk {path}: {problem}. Its rows will be "
          "recomputed; `bneck cache gc` removes it.", file=sys.stderr, flush=True)


class CorruptChunk(Exception):
    """A committed chunk no longer matches its own checksum."""


class RowCache:
    """Feature rows of one extractor, addressed by image sha256."""

    def __init__(self, cache_dir: str, spec: ExtractorSpec):
        self.spec, self.cache_dir = spec, cache_dir
        self.folder = os.path.join(cache_dir, "features", spec.key)
        os.makedirs(self.folder, exist_ok=True)
        self._lock = FileLock(os.path.join(self.folder, ".lock"), timeout=LOCK_TIMEOUT_S)
        self._index: dict[str, tuple[str, int]] = {}
        self._scanned: set[str] = set()
        self._write_meta()

    def _write_meta(self) -> None:
        meta = os.path.join(self.folder, "meta.json")
        if os.path.exists(meta):
            os.utime(meta)  # "last used", for `bneck cache gc --older-than`
            return
        with atomic_target(meta) as tmp:
            with open(tmp, "w") as handle:
                json.dump({"extractor_key": self.spec.key, **self.spec.describe()}, handle, indent=1)

    def refresh(self) -> None:
        """Index chunks committed since the last look (by this or any other process)."""
        for path in _chunk_files(self.folder):
            if path in self._scanned:
                continue
            shas, problem = _chunk_shas(path, self.spec.key)
            self._scanned.add(path)
            if shas is None:
                _warn_damaged(path, problem)
                continue
            for row, sha in enumerate(shas):
                self._index.setdefault(sha, (path, row))

    def __contains__(self, sha: str) -> bool:
        return sha in self._index

    def commit(self, shas: list[str], feats: np.ndarray) -> None:
        """Store rows for ``shas`` as a new chunk, atomically."""
        name = f"{CHUNK_PREFIX}{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.h5"
        path = os.path.join(self.folder, name)
        write_rows_file(path, self.spec.key, list(shas), feats)
        self._scanned.add(path)
        for row, sha in enumerate(shas):
            self._index.setdefault(sha, (path, row))

    def read_rows(self, shas: list[str], sink) -> None:
        """Call ``sink(start, rows)`` with consecutive blocks of features for ``shas``.

        Memory stays bounded by one block plus one chunk. Raises CorruptChunk when a
        chunk fails its checksum.
        """
        with self._lock:
            if any(not os.path.exists(p) for p in {self._index[s][0] for s in shas}):
                self._index.clear()  # gc merged chunks meanwhile: look again
                self._scanned.clear()
                self.refresh()
            loaded_path, loaded = None, None
            shape, dtype = self.row_layout(shas[0]) if shas else ((), np.float32)
            row_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            block_rows = max(1, (64 << 20) // max(1, row_bytes))
            for start in range(0, len(shas), block_rows):
                part = shas[start:start + block_rows]
                out = None
                for i, sha in enumerate(part):
                    path, row = self._index[sha]
                    if path != loaded_path:
                        loaded_path, loaded = path, self._load_chunk(path)
                    if out is None:
                        out = np.empty((len(part),) + loaded.shape[1:], loaded.dtype)
                    out[i] = loaded[row]
                sink(start, out)

    def row_layout(self, sha: str) -> tuple[tuple[int, ...], np.dtype]:
        """Return (row shape, dtype) of the stored rows, read from the chunk holding ``sha``."""
        with h5py.File(self._index[sha][0], "r") as f:
            ds = f["features"]
            return tuple(ds.shape[1:]), ds.dtype

    @staticmethod
    def _load_chunk(path: str) -> np.ndarray:
        try:
            with h5py.File(path, "r") as f:
                feats = f["features"][()]
                expected = f.attrs.get("features_sha256")
        except (OSError, KeyError, RuntimeError):
            raise CorruptChunk(path) from None
        if expected != _digest(feats):
            raise CorruptChunk(path)
        return feats


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
        if not os.path.isfile(meta_path):
            continue
        try:
            with open(meta_path) as handle:
                meta = json.load(handle)
        except ValueError:
            meta = {}  # damaged: `verify_cache` reports it
        chunks = _chunk_files(folder)
        shas = set()
        for path in chunks:
            shas.update(_chunk_shas(path, key)[0] or ())
        size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
        entries.append(CacheEntry(key, folder, meta, len(shas), len(chunks), size,
                                  os.path.getmtime(meta_path)))
    return entries


def collect_garbage(cache_dir: str, older_than_days: Optional[float] = None) -> dict:
    """Tidy the cache; returns counts of what was removed and merged.

    Removes temporaries of dead processes and unreadable or corrupt chunks, merges
    each entry's chunks into one (dropping duplicate rows), and with
    ``older_than_days`` deletes entries not used for that long.
    """
    stats = {"temporaries": 0, "bad_chunks": 0, "merged_chunks": 0, "entries_removed": 0,
             "bytes_before": 0, "bytes_after": 0}
    entries = list_entries(cache_dir)
    stats["bytes_before"] = sum(e.bytes for e in entries)
    now = time.time()
    for entry in entries:
        with FileLock(os.path.join(entry.folder, ".lock"), timeout=LOCK_TIMEOUT_S):
            if older_than_days is not None and now - entry.last_used > older_than_days * 86400:
                _remove_tree(entry.folder)
                stats["entries_removed"] += 1
                continue
            for tmp in stale_temporaries(entry.folder):
                os.remove(tmp)
                stats["temporaries"] += 1
            _merge_chunks(entry, stats)
    stats["bytes_after"] = sum(e.bytes for e in list_entries(cache_dir))
    return stats


def _merge_chunks(entry: CacheEntry, stats: dict) -> None:
    """Rewrite an entry's chunks as one, one chunk in memory at a time."""
    plan, seen = [], set()  # (path, kept row indices)
    for path in _chunk_files(entry.folder):
        chunk_shas, _ = read_rows_file(path, entry.key)
        if chunk_shas is None:
            os.remove(path)
            stats["bad_chunks"] += 1
            continue
        keep = [i for i, s in enumerate(chunk_shas) if s not in seen]
        seen.update(chunk_shas)
        plan.append((path, keep, [chunk_shas[i] for i in keep]))
    if len(plan) <= 1:
        return
    with h5py.File(plan[0][0], "r") as f:
        row_shape, dtype = f["features"].shape[1:], f["features"].dtype
    total = sum(len(keep) for _, keep, _ in plan)
    name = f"{CHUNK_PREFIX}{time.time_ns()}-{os.getpid()}-merged.h5"
    with atomic_target(os.path.join(entry.folder, name)) as tmp:
        with h5py.File(tmp, "w") as out:
            feats = out.create_dataset("features", shape=(total,) + row_shape, dtype=dtype)
            digest, start = hashlib.sha256(), 0
            for path, keep, _ in plan:
                rows = np.ascontiguousarray(RowCache._load_chunk(path)[keep])
                feats[start:start + len(rows)] = rows
                digest.update(rows.tobytes())
                start += len(rows)
            _fill_chunk(out, entry.key, np.array([s for *_, shas in plan for s in shas], dtype="S64"))
            out.attrs["features_sha256"] = digest.hexdigest()
            out.attrs["complete"] = True  # written last
    for path, _, _ in plan:
        os.remove(path)
    stats["merged_chunks"] += len(plan)


def verify_cache(cache_dir: str) -> tuple[int, list[tuple[str, str]]]:
    """Read every chunk of every entry in full; returns (chunks checked, [(path, problem)])."""
    checked, problems = 0, []
    for entry in list_entries(cache_dir):
        if entry.meta.get("extractor_key") != entry.key:
            problems.append((os.path.join(entry.folder, "meta.json"), "damaged, or not this entry's key"))
        for path in _chunk_files(entry.folder):
            checked += 1
            _, problem = read_rows_file(path, entry.key)
            if problem:
                problems.append((path, problem))
    return checked, problems


def _remove_tree(folder: str) -> None:
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    os.rmdir(folder)


def missing_shas(cache: RowCache, shas: Iterable[str]) -> list[str]:
    """Return the distinct shas not yet in ``cache``, in first-seen order."""
    out, seen = [], set()
    for sha in shas:
        if sha not in cache and sha not in seen:
            seen.add(sha)
            out.append(sha)
    return out
