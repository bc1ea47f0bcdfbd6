"""Opening files someone else put there: regular files only, never a device, a pipe or a socket.

A path named ``cat.jpg`` may be a symlink to ``/dev/zero`` (endless bytes), a FIFO
(an ``open`` that never returns) or a socket. The file is opened without blocking and
checked with ``fstat`` on the open descriptor, so what is checked is what is read:
there is no window between a ``stat`` and the ``open`` for the path to change.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


# The largest image file bneck reads: an RGB bitmap at Pillow's pixel limit (268 MB) and
# room for its headers. Larger files are refused from their size, before a byte is read.
MAX_IMAGE_FILE_BYTES = 270 << 20


class NotRegularFile(OSError):
    """The path exists but is not a regular file (or not one bneck reads); ``strerror`` says why."""


def read_whole(handle: BinaryIO, path: str, max_bytes: int | None = None) -> bytes:
    """Return all bytes of an open regular file, refusing one larger than ``max_bytes`` from its
    size, and one that yields more bytes than its size says (growing, or a pseudo-file like
    ``/proc/self/pagemap``, which claims 0 bytes and yields gigabytes)."""
    size = os.fstat(handle.fileno()).st_size
    if max_bytes is not None and size > max_bytes:
        raise NotRegularFile(errno.EFBIG, f"too large: {size / 2**20:.0f} MB (limit {max_bytes / 2**20:.0f} MB)", path)
    data = handle.read(size + 1)
    if len(data) > size:
        raise NotRegularFile(
            errno.EIO,
            "not a real file: it yields more bytes than its size (a pseudo-file, or it grew while it was read)",
            path,
        )
    return data


def kind_of(mode: int) -> str:
    """Return what a file of this ``st_mode`` is, in words ('a FIFO (named pipe)', ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str, follow_symlinks: bool = True) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file.

    A symlink to a regular file is fine unless ``follow_symlinks`` is False. Raises
    NotRegularFile (an OSError) for a folder, FIFO, device, socket or refused
    symlink, and the usual OSError when it cannot be opened at all.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # what opening a socket file gives
            raise NotRegularFile(errno.ENXIO, "not a regular file: a socket", path) from None
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise NotRegularFile(errno.ELOOP, "not a regular file: a symbolic link", path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file: {kind_of(st.st_mode)}", path)
        if st.st_size == 0:
            _refuse_pseudo_file(fd, path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _refuse_pseudo_file(fd: int, path: str) -> None:
    """A regular file of size 0 is empty, or a kernel pseudo-file (``/proc/kmsg`` blocks a reader
    for ever, ``/proc/self/pagemap`` yields gigabytes): one byte read without blocking tells."""
    try:
        first = os.read(fd, 1)
    except BlockingIOError:
        raise NotRegularFile(
            errno.EAGAIN, "not a real file: reading it would wait (a kernel pseudo-file)", path
        ) from None
    except OSError as exc:  # /proc/self/pagemap: EINVAL for a read that is not 8 bytes, aligned
        raise NotRegularFile(
            exc.errno or errno.EIO,
            f"not a real file: a plain read of it fails ({exc.strerror}; a kernel pseudo-file)",
            path,
        ) from None
    if first:
        raise NotRegularFile(errno.EIO, "not a real file: it yields bytes while its size is 0 (a pseudo-file)", path)


def path_inside(root: str, relative: str, follow_links: bool = False) -> str | None:
    """Return ``root/relative`` when it stays inside ``root``, else None.

    ``relative`` must be a relative path without '..' components; unless
    ``follow_links``, the real path (symbolic links resolved) must lie inside the real
    ``root`` too. A recorded or handed path can then never reach ``/etc`` or ``/proc``.
    """
    if not isinstance(relative, str) or not relative or os.path.isabs(relative) or "\0" in relative:
        return None
    if any(part == ".." for part in relative.replace("\\", "/").split("/")):
        return None
    path = os.path.join(root, relative)
    if follow_links:
        return path
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return path if real.startswith(real_root.rstrip(os.sep) + os.sep) else None


def is_regular(path: str) -> bool:
    """Return True when ``path`` itself is a regular file (not a link, folder, FIFO, device or socket)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
