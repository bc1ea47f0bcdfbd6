"""Atomic file creation: write beside the target, then ``os.replace``.

A crash or ``kill -9`` leaves at most a hidden ``.NAME.tmp-PID-RANDOM`` file, never a
half-written file under the real name (``datasets`` cache files, DVC outputs).
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from contextlib import contextmanager

from bneck.core.errors import StorageError
from bneck.core.files import is_regular

_TMP_PATTERN = re.compile(r"^\..+\.(?:tmp|old)-(\d+)-[0-9a-f]{8}$")


# errno values that mean "this storage cannot take the write", whatever the file.
WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EFBIG,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.ENAMETOOLONG,
}
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def write_failure(exc: BaseException):
    """Return (errno, reason) when ``exc`` is a failed write (also HDF5's RuntimeErrors), else None."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and isinstance(exc, (OSError, RuntimeError)):
        found = _HDF5_ERRNO.search(str(exc))
        code = int(found.group(1)) if found else None
    if code is None and type(exc).__module__.startswith("tensorflow"):  # an OpError says it only in words
        text = str(exc)
        code = next((c for c in sorted(WRITE_ERRNOS) if os.strerror(c) in text), None)
    if code in WRITE_ERRNOS:
        return code, os.strerror(code)
    return None


def storage_error(exc: BaseException, path: str) -> StorageError:
    """Return the one-paragraph error for a write to ``path`` that the storage refused."""
    code, reason = write_failure(exc)
    hint = {
        errno.ENOSPC: "Free some disk space",
        errno.EDQUOT: "Free some of your disk quota",
        errno.EFBIG: "Raise the file size limit (ulimit -f) or free space",
        errno.EROFS: "Choose a writable folder",
        errno.EACCES: "Choose a folder you can write to",
        errno.EPERM: "Choose a folder you can write to",
        errno.ENAMETOOLONG: "Choose a shorter path (a name holds at most 255 bytes, a path 4,096)",
    }.get(code, "Check the disk")
    return StorageError(
        f"could not write {path}: {reason} (errno {code}). {hint} (or pass another "
        "--out / --cache-dir), then rerun: files and cache entries written before "
        "are intact, and every row already in the cache is reused."
    )


@contextmanager
def atomic_target(path: str):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    A write the storage refuses (disk full, file too large, read-only, no permission)
    becomes a StorageError naming ``path``; the previous ``path`` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and not os.path.islink(path):
        raise StorageError(
            f"could not write {path}: a folder of that name is there, where bneck writes a file. "
            "Remove or rename it, then rerun (everything written before is intact)."
        )
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with refused_writes_as_errors(path):
            os.makedirs(folder, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def refused_writes_as_errors(path: str):
    """Turn a write the storage refuses, inside the block, into a StorageError naming ``path``."""
    try:
        yield
    except Exception as exc:  # OSError, HDF5's RuntimeError, TensorFlow's OpError (SaveV2 under ulimit -f)
        if write_failure(exc) is None:
            raise
        raise storage_error(exc, path) from None


@contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs):
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``."""
    with atomic_target(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def stale_temporaries(folder: str) -> list[str]:
    """Return temporary files in ``folder`` whose writing process no longer runs (files and links
    only: a folder or FIFO under such a name was not written by bneck and is left alone)."""
    out = []
    for name in os.listdir(folder):
        match = _TMP_PATTERN.match(name)
        path = os.path.join(folder, name)
        if match and not pid_alive(int(match.group(1))) and (is_regular(path) or os.path.islink(path)):
            out.append(path)
    return out


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
