"""The shared feature cache: rows stored by (extractor key, image sha256).

Layout under the cache folder::

    features/<extractor key>/meta.json        what the key stands for
    features/<extractor key>/rows-*.h5         committed chunks: sha256 (n,), features (n, ...)
    features/<extractor key>/.lock            taken while reading rows and while gc rewrites
    features/<extractor key>/.inuse           shared-locked by every process using the entry:
                                              ``gc --older-than`` removes only entries nobody holds

Every chunk is written atomically by the process that computed it, so any number of
processes can add rows at once without coordination; an interrupted run keeps all
chunks it committed. Because rows are found by image content, renamed or moved
images and other projects with overlapping images reuse them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from contextlib import nullcontext

import h5py
import numpy as np
from filelock import FileLock

from bneck.core.atomic import atomic_target
from bneck.core.errors import BneckWarning, ConfigError, FeatureFileError, StorageError
from bneck.core.folders import MARKER, folder_kind, write_marker
from bneck.core.hashing import RowsDigest
from bneck.core.private import first_written_by_others, make_private_folder
from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.cache.chunks import (  # noqa: F401 - re-exported: where they were
    CHUNK_PREFIX,
    KEY_NAME,
    CorruptChunk,
    _chunk_shas,
    _fill_chunk,
    chunk_files,
    load_chunk,
    read_rows_file,
    write_rows_file,
)
from bneck.features.cache.in_use import hold_in_use
from bneck.features.featurefile.storage import ROUNDED_DTYPES, round_rows

LOCK_TIMEOUT_S = 600


def default_cache_dir() -> str:
    """Return ``$BNECK_CACHE`` or ``~/.cache/bneck``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("BNECK_CACHE") or "~/.cache/bneck"))


def resolve_cache_dir(cache_dir: str | None, inputs: Iterable[str] = ()) -> str:
    """Return the absolute cache folder (``cache_dir``, else the default), refusing bad ones.

    Raises ConfigError when it exists and is not a folder, or lies inside an input or
    output folder (the cache would become part of the data), or holds one.
    """
    path = check_cache_dir(os.path.abspath(os.path.expanduser(str(cache_dir))) if cache_dir else default_cache_dir())
    real = os.path.realpath(path)
    for item in inputs:
        other = os.path.realpath(os.path.abspath(os.path.expanduser(str(item))))
        if (
            real == other
            or real.startswith(other.rstrip(os.sep) + os.sep)
            or other.startswith(real.rstrip(os.sep) + os.sep)
        ):
            raise ConfigError(
                f"--cache-dir {path} and {item} overlap (one is inside the other): the "
                f"cache would become part of what bneck reads or writes. Give a separate "
                f"--cache-dir (default $BNECK_CACHE or ~/.cache/bneck)."
            )
    return path


# What a cache folder holds: bneck writes these names and nothing else at its top.
CACHE_NAMES = frozenset({"features", "openvino", "datasets", MARKER})


def check_cache_dir(path: str) -> str:
    """Return ``path`` if bneck may use it as its cache: new, empty, marked as a bneck cache, or a
    cache of an older bneck (only the names a cache holds); raises ConfigError otherwise."""
    try:
        os.stat(path)
    except FileNotFoundError:
        pass  # made when first used (private, with any missing parent)
    except OSError as exc:  # a loop of symbolic links, a path through a regular file, no permission
        raise ConfigError(
            f"--cache-dir {path} cannot be a cache folder: {exc.strerror or exc}. Give a folder you can "
            "write, or none (default $BNECK_CACHE or ~/.cache/bneck). Nothing was written."
        ) from None
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(
            f"--cache-dir {path} exists and is not a folder. Give a folder for the "
            f"shared feature cache (default $BNECK_CACHE or ~/.cache/bneck)."
        )
    kind = folder_kind(path)
    if kind not in (None, "cache"):
        raise ConfigError(f"--cache-dir {path} is a bneck {kind} folder, not a feature cache. Give another folder.")
    if kind is None and os.path.isdir(path):
        foreign = sorted(set(os.listdir(path)) - CACHE_NAMES)
        if foreign:
            raise ConfigError(
                f"--cache-dir {path} is not a bneck feature cache: it holds {', '.join(foreign[:3])}"
                f"{' ...' if len(foreign) > 3 else ''}, and bneck only ever writes (or tidies) "
                f"folders it made. Give a new or empty folder, or your cache."
            )
    if os.path.isdir(path):
        _check_written_by_owner(path)
    return path


def _check_written_by_owner(path: str) -> None:
    """Refuse a cache that someone other than its owner could have written (rows bneck would reuse)."""
    try:
        found = first_written_by_others(path)
    except OSError as exc:
        found = (exc.filename or path, exc.strerror or str(exc))
    if found:
        where, why = found
        raise ConfigError(
            f"the cache {path} (--cache-dir, or $BNECK_CACHE) cannot be trusted: {where}: {why}. bneck reuses the "
            "rows and converted "
            f"models it finds in its cache as its own, so every folder and file in it must be writable by "
            f"the cache's owner only. Make it so (chmod -R go-w {path}), or give a cache of your own "
            f"(default $BNECK_CACHE or ~/.cache/bneck); a team shares one cache with one writer and "
            f"readers who can only read it (docs/extract.md, 'Sharing a cache')."
        )


def _mark_cache(path: str) -> None:
    if folder_kind(path) != "cache":
        write_marker(path, "cache")


def _warn_damaged(path: str, problem: str) -> None:
    warnings.warn(
        f"ignoring damaged cache chunk {path}: {problem}. Its rows will be recomputed; `bneck cache gc` removes it.",
        BneckWarning,
        stacklevel=3,
    )


def _read_only(cache_dir: str, folder: str) -> bool:
    """Whether this process cannot write the entry (or, before it exists, the cache): a shared cache."""
    target = folder if os.path.isdir(folder) else cache_dir
    return os.path.isdir(target) and not os.access(target, os.W_OK)


class MissingRows(Exception):
    """Rows this cache held a moment ago are gone (``cache gc`` removed their entry); ``shas`` lists them."""

    def __init__(self, shas: list[str]):
        super().__init__(f"{len(shas)} row(s) left the cache")
        self.shas = shas


class RowCache:
    """Feature rows of one extractor, addressed by image sha256."""

    def __init__(self, cache_dir: str, spec: ExtractorSpec):
        self.spec, self.cache_dir = spec, cache_dir
        self.folder = os.path.join(cache_dir, "features", spec.key)
        self._index: dict[str, tuple[str, int]] = {}
        self._scanned: set[str] = set()
        self.read_only = _read_only(cache_dir, self.folder)
        if self.read_only:  # a cache shared by its one writer: read its rows, never lock or write
            self._lock: FileLock | nullcontext = nullcontext()
            self._in_use = None
            return
        make_private_folder(cache_dir)  # a new cache is private (0700), whatever the umask
        os.makedirs(self.folder, exist_ok=True)
        _mark_cache(cache_dir)
        self._lock = FileLock(os.path.join(self.folder, ".lock"), timeout=LOCK_TIMEOUT_S)
        self._in_use = hold_in_use(self.folder)  # `gc --older-than` never removes an entry in use
        self._write_meta()

    def refuse_writing(self, images: int) -> None:
        """Raise StorageError when rows for ``images`` images would have to be added to a read-only cache."""
        if self.read_only and images:
            raise StorageError(
                f"the cache {self.cache_dir} is read-only for you (a cache shared by its writer), and it lacks "
                f"the rows of {images} image(s) this command needs, so they cannot be kept there. Ask its "
                "writer to extract these images, or give a cache of your own (--cache-dir); rows it holds "
                "are read from it either way. Nothing was computed."
            )

    def _write_meta(self) -> None:
        """Write ``meta.json`` if missing (also after ``gc --older-than`` removed the entry), else touch it."""
        meta = os.path.join(self.folder, "meta.json")
        try:
            os.utime(meta)  # "last used", for `bneck cache gc --older-than`
            return
        except FileNotFoundError:
            pass
        os.makedirs(self.folder, exist_ok=True)
        with atomic_target(meta) as tmp:
            with open(tmp, "w") as handle:
                json.dump(
                    {"extractor_key": self.spec.key, **self.spec.describe(), "weights_path": self.spec.weights_path},
                    handle,
                    indent=1,
                )

    def close(self) -> None:
        """Stop holding the entry in use (``gc --older-than`` may remove it from now on)."""
        if self._in_use is not None:
            self._in_use.close()
            self._in_use = None

    def _rescan(self) -> None:
        """Forget the index and look again: chunks were merged or removed meanwhile."""
        self._index.clear()
        self._scanned.clear()
        self.refresh()

    def refresh(self) -> None:
        """Index chunks committed since the last look (by this or any other process)."""
        if not os.path.isdir(self.folder):
            return
        for path in chunk_files(self.folder):
            if path in self._scanned:
                continue
            shas, problem = _chunk_shas(path, self.spec.key)
            self._scanned.add(path)
            if shas is None:
                if os.path.exists(path):  # else gc merged or removed it meanwhile: not damage
                    _warn_damaged(path, problem)
                continue
            for row, sha in enumerate(shas):
                self._index.setdefault(sha, (path, row))

    def __contains__(self, sha: str) -> bool:
        return sha in self._index

    def commit(self, shas: list[str], feats: np.ndarray) -> None:
        """Store rows for ``shas`` as a new chunk, atomically (rounded first when the
        entry's dtype says so: fine-tuning views, see ``featurefile.storage``)."""
        self.refuse_writing(len(shas))
        name = f"{CHUNK_PREFIX}{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.h5"
        path = os.path.join(self.folder, name)
        self._write_meta()
        rows = round_rows(feats, self.spec.dtype)
        write_rows_file(path, self.spec.key, list(shas), rows, shuffle=self.spec.dtype in ROUNDED_DTYPES)
        self._scanned.add(path)
        for row, sha in enumerate(shas):
            self._index.setdefault(sha, (path, row))

    def read_rows(self, shas: list[str], sink) -> None:
        """Call ``sink(start, rows)`` with consecutive blocks of features for ``shas``.

        Memory stays bounded by one block plus one chunk. Raises CorruptChunk when a
        chunk fails its checksum, and MissingRows when rows are no longer in the cache.
        """
        with self._locked():
            self._check_present(shas)
            loaded_path, loaded = None, None
            shape, dtype = self._layout(shas[0]) if shas else ((), np.float32)
            row_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            block_rows = max(1, (64 << 20) // max(1, row_bytes))
            for start in range(0, len(shas), block_rows):
                part = shas[start : start + block_rows]
                out = None
                for i, sha in enumerate(part):
                    path, row = self._index[sha]
                    if path != loaded_path:
                        loaded_path, loaded = path, self._load_chunk(path, dtype=self.spec.dtype)
                    if out is None:
                        out = np.empty((len(part),) + loaded.shape[1:], loaded.dtype)
                    out[i] = loaded[row]
                sink(start, out)

    def digest(self, shas: list[str]) -> str:
        """Return the sha256 of the rows for ``shas``, in order, as a split file stores them."""
        digest = RowsDigest()
        self.read_rows(shas, lambda _, rows: digest.update(rows))
        return digest.hexdigest()

    def row_layout(self, sha: str) -> tuple[tuple[int, ...], np.dtype]:
        """Return (row shape, dtype) of the stored rows; raises MissingRows if ``sha``'s row is gone."""
        with self._locked():
            self._check_present([sha])
            return self._layout(sha)

    def _layout(self, sha: str) -> tuple[tuple[int, ...], np.dtype]:
        with h5py.File(self._index[sha][0], "r") as f:
            ds = f["features"]
            return tuple(ds.shape[1:]), ds.dtype

    def _locked(self):
        if not self.read_only:
            os.makedirs(self.folder, exist_ok=True)  # gc may have emptied the entry
        return self._lock

    def _check_present(self, shas) -> None:
        """Rescan when a row is unknown or its chunk is gone; raises MissingRows for rows still absent."""
        wanted = set(shas)
        if any(s not in self._index or not os.path.exists(self._index[s][0]) for s in wanted):
            self._rescan()
        missing = [s for s in dict.fromkeys(shas) if s not in self._index]
        if missing:
            raise MissingRows(missing)

    _load_chunk = staticmethod(load_chunk)


def missing_shas(cache: RowCache, shas: Iterable[str]) -> list[str]:
    """Return the distinct shas not yet in ``cache``, in first-seen order."""
    out, seen = [], set()
    for sha in shas:
        if sha not in cache and sha not in seen:
            seen.add(sha)
            out.append(sha)
    return out


class RowWriter:
    """Commits rows to a RowCache as they are made: every ``rows`` rows or ``seconds`` seconds,
    and whatever is pending when closed, also on Ctrl-C, so nothing computed is thrown away."""

    def __init__(self, cache: RowCache, rows: int = 1024, seconds: float = 20.0):
        self.cache, self.rows, self.seconds = cache, rows, seconds
        self._shas: list[str] = []
        self._rows: list[np.ndarray] = []
        self._last = time.monotonic()

    def add(self, shas: Sequence[str], rows: np.ndarray) -> None:
        self._shas.extend(shas)
        self._rows.append(rows)
        if len(self._shas) >= self.rows or time.monotonic() - self._last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self._shas:
            self.cache.commit(self._shas, np.concatenate(self._rows))
        self._shas, self._rows, self._last = [], [], time.monotonic()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def damaged_chunk_error(exc: CorruptChunk) -> FeatureFileError:
    """The one paragraph for a damaged cache chunk met while reading it (extraction, fine-tuning views)."""
    return FeatureFileError(
        f"the cache file {exc} is damaged (its features fail their checksum, hold NaN or infinity, "
        "or are not the rounded numbers its entry stores). Run `bneck cache gc` to drop it, then rerun "
        "to recompute its rows."
    )


def remaking_missing(action, remake, attempts: int = 3):
    """Return ``action()``; when rows left the cache meanwhile (``cache gc``), ``remake(shas)`` them
    and try again, ``attempts`` times at most (then MissingRows propagates)."""
    for attempt in range(attempts + 1):
        try:
            return action()
        except MissingRows as exc:
            if attempt == attempts:
                raise
            remake(exc.shas)
