"""The ``.inuse`` file of a cache entry: every process using the entry holds it shared-locked, and
``bneck cache gc --older-than`` removes only entries it can lock exclusively (``maintenance``)."""

from __future__ import annotations

import os
import stat

try:
    import fcntl
except ImportError:  # Windows: no protection of entries in use from `gc --older-than`
    fcntl = None

IN_USE = ".inuse"


def open_in_use_file(folder: str):
    """Open (creating) the entry's ``.inuse`` lock file; None when it is not a regular file.

    Never blocks: a FIFO planted under this name would wait for a reader for ever, so it
    is opened non-blocking, without following links, and anything but a regular file is
    refused."""
    path = os.path.join(folder, IN_USE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, 0o666)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "ab")


def hold_in_use(folder: str):
    """Hold a shared lock on the entry's ``.inuse`` file while this process uses it (None without fcntl)."""
    if fcntl is None:
        return None
    handle = open_in_use_file(folder)
    if handle is None:
        return None  # not a file the cache made: the entry is simply not protected from `gc --older-than`
    fcntl.flock(handle, fcntl.LOCK_SH)  # waits only while a gc is removing the entry
    return handle
