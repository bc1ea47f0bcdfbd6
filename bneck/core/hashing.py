"""Content hashes: images and weights enter cache keys by sha256, never by path."""

import errno
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from bneck.core.files import MAX_IMAGE_FILE_BYTES, NotRegularFile, open_regular

_BLOCK = 1 << 20


def sha256_file(path: str, max_bytes: int | None = None) -> str:
    """Return the hex sha256 of a regular file's bytes.

    Raises OSError if unreadable, NotRegularFile (an OSError) for a FIFO, device,
    socket or folder, a file larger than ``max_bytes``, or one yielding more bytes than
    its size (a pseudo-file): none of them is read further, so a hostile path cannot
    hang or flood.
    """
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise NotRegularFile(
                errno.EFBIG, f"too large: {size / 2**20:.0f} MB (limit {max_bytes / 2**20:.0f} MB)", path
            )
        total = 0
        while True:
            block = handle.read(_BLOCK)
            if not block:
                break
            total += len(block)
            if total > size:
                raise NotRegularFile(
                    errno.EIO,
                    "not a real file: it yields more bytes than its size (a pseudo-file, or it grew while it was read)",
                    path,
                )
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_array(array) -> str:
    """Return the hex sha256 of an array's bytes in C order (how feature checksums are defined)."""
    return RowsDigest().update(array).hexdigest()


class RowsDigest:
    """The sha256 of rows fed block by block, equal to ``sha256_array`` of all of them at once."""

    def __init__(self):
        self._digest = hashlib.sha256()

    def update(self, rows, dtype=None) -> "RowsDigest":
        import numpy as np

        # the array's own buffer (C order), not a copy of it: hashing a split's rows costs no second copy
        self._digest.update(np.ascontiguousarray(rows, dtype=dtype).reshape(-1).view(np.uint8))
        return self

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def sha256_json(obj) -> str:
    """Return the hex sha256 of ``obj`` as sorted-key compact JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_files(
    paths: Sequence[str], workers: int = 0, max_bytes: int | None = MAX_IMAGE_FILE_BYTES
) -> list[tuple[str | None, str | None]]:
    """Return [(sha256, None) or (None, reason)] per path (images: at most ``max_bytes`` each),
    reading files on all cores.

    Ctrl-C cancels every file not started yet, so it stops within one group of files.
    """

    def one(path):
        try:
            return sha256_file(path, max_bytes), None
        except OSError as exc:
            return None, f"unreadable: {exc.strerror or exc}"

    def group(start):  # one task per 64 files: per-future overhead dwarfs hashing a small JPEG
        return [one(p) for p in paths[start : start + 64]]

    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        futures = [pool.submit(group, start) for start in range(0, len(paths), 64)]
        return [h for future in futures for h in future.result()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
