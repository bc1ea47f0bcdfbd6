"""Rows on disk: stage 3's cached trunk outputs for one split, read back a block at a time.

With ``--cache-frozen``, stage 3 trains on the trunk's output for every view of every
training image. Held in memory, that grows with the data (MobileNetV2-0.5 cut at
``block_13_expand``, 4 views: 150 kB per training image, 3 GB for 20,000 images).
A ``RowFile`` is one flat float32 file, written once in order from the feature cache's
verified rows and then read with ``pread`` a block at a time, so resident memory stays
a few blocks whatever the number of images. An epoch asks for its rows in a shuffled
order: ``take`` reads them in file order with a few threads and the training loop reads
the next block while it trains on this one, so a file larger than the page cache costs
the disk's time only where it exceeds the model's. The file lives in a private temporary
folder and is removed when the fine-tune ends.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bneck.core.atomic import pid_alive
from bneck.core.errors import FeatureFileError
from bneck.core.files import kind_of
from bneck.core.private import make_private_folder
from bneck.features.featurefile.storage import ROUNDED_DTYPES, round_to_bfloat16

# The most one pread asks for: Linux returns at most about 2 GB per call.
READ_CHUNK = 1 << 30
# Threads reading one ``take``. Random reads of 94 kB rows from a 20 GB file on this machine's disk
# (rows in random order, read-ahead on: 0.58 ms a row; read-ahead off, in file order, 4 threads: 0.15 ms;
# 2 threads 0.25 ms, 8 threads 0.44 ms).
READERS = 4


def to_bfloat16(block: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded as the cache rounds views (``round_to_bfloat16``):
    exact for values already bfloat16."""
    return (round_to_bfloat16(block).view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def from_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32, exactly: the bits become each float's upper half, written in
    place (no 32-bit temporaries: a block of rows costs its float32 result and nothing more)."""
    out = np.zeros(bits.shape, np.float32)
    out.view(np.uint16).reshape(bits.shape + (2,))[..., 1 if sys.byteorder == "little" else 0] = bits
    return out


class RowFile:
    """``rows`` float32 rows of ``shape`` in one file: filled once in order, then read by index.

    ``stored="bfloat16"`` or ``"e8m5"`` keeps half the bytes (bfloat16), for rows that are such values
    already (views cached with that ``--view-precision``, exact in bfloat16): read back, they are the same
    float32 numbers.
    """

    def __init__(self, folder: str, name: str, rows: int, shape: Sequence[int], stored: str = "float32"):
        self.half = stored in ROUNDED_DTYPES
        self.path = os.path.join(folder, f"{name}.{'bf16' if self.half else 'f32'}")
        self.rows, self.shape = int(rows), tuple(int(d) for d in shape)
        self.row_bytes = int(np.prod(self.shape, dtype=np.int64)) * (2 if self.half else 4)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.ftruncate(self._fd, self.rows * self.row_bytes)
        if hasattr(os, "posix_fadvise"):  # read by index: the kernel's read-ahead would fetch rows nobody asked for
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return self.rows

    def write(self, first: int, block: np.ndarray) -> None:
        """Store ``block`` as rows ``first``, ``first + 1``, ..."""
        block = np.ascontiguousarray(block, np.float32)
        if block.shape[1:] != self.shape or first < 0 or first + len(block) > self.rows:
            raise ValueError(
                f"rows {first}..{first + len(block)} of shape {block.shape[1:]} do not fit "
                f"{self.rows} rows of shape {self.shape}"
            )
        os.pwrite(self._fd, (to_bfloat16(block) if self.half else block).tobytes(), first * self.row_bytes)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """Return the rows at ``indices`` (any order, repeats allowed) as a new array.

        The rows are read in file order, runs of consecutive rows in one read, by ``READERS`` threads
        at once: a shuffled epoch over a file larger than the page cache waits on the disk, not Python."""
        wanted = np.asarray(indices)
        if wanted.ndim != 1 or (wanted.size and wanted.dtype.kind not in "iu"):
            raise IndexError(
                f"row indices must be one sequence of integers; received {wanted.dtype} values of shape {wanted.shape}"
            )
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= self.rows):
            raise IndexError(f"row indices must be in 0..{self.rows - 1}; received {wanted.min()}..{wanted.max()}")
        wanted = wanted.astype(np.int64)
        out = np.empty((len(wanted),) + self.shape, np.uint16 if self.half else np.float32)
        flat = out.reshape(len(wanted), self.row_bytes // out.itemsize).view(np.uint8)
        order = np.argsort(wanted, kind="stable")
        ascending = wanted[order]
        bounds = np.flatnonzero(np.diff(ascending) > 1) + 1  # where a run of consecutive rows ends
        runs = list(zip(np.r_[0, bounds], np.r_[bounds, len(wanted)])) if len(wanted) else []

        def read(part: list) -> None:
            for lo, hi in part:
                first, count = int(ascending[lo]), int(ascending[hi - 1] - ascending[lo]) + 1
                data = np.frombuffer(self._read(first * self.row_bytes, count * self.row_bytes), np.uint8)
                flat[order[lo:hi]] = data.reshape(count, self.row_bytes)[ascending[lo:hi] - first]

        if len(runs) < 2 * READERS:
            read(runs)
        else:
            list(self._readers().map(read, [runs[i::READERS] for i in range(READERS)]))
        return from_bfloat16(out) if self.half else out

    def _readers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READERS, thread_name_prefix="bneck-rows")
        return self._pool

    def __getitem__(self, item: slice) -> np.ndarray:
        """Return consecutive rows (``rows[a:b]``) in one read."""
        if not isinstance(item, slice):
            raise TypeError(f"a RowFile gives consecutive rows by a slice (rows[a:b]), others by take(); not {item!r}")
        start, stop, step = item.indices(self.rows)
        if step != 1:
            raise ValueError("RowFile slices take consecutive rows")
        count = max(0, stop - start)
        data = self._read(start * self.row_bytes, count * self.row_bytes)
        if self.half:
            return from_bfloat16(np.frombuffer(data, np.uint16).reshape((count,) + self.shape))
        return np.frombuffer(data, np.float32).reshape((count,) + self.shape).copy()

    def _read(self, offset: int, size: int) -> bytes:
        parts, done = [], 0
        while done < size:
            part = os.pread(self._fd, min(size - done, READ_CHUNK), offset + done)
            if not part:
                raise FeatureFileError(
                    f"{self.path}, the fine-tune's temporary row file, ended while it was read (read {done} of "
                    f"{size} bytes at byte {offset}): something truncated or replaced it while the fine-tune "
                    "ran. Nothing of this fine-tune was saved; run it again (the views stay in the cache)."
                )
            parts.append(part)
            done += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


PREFIX = "bneck-rows-"


def remove_abandoned(parent: str) -> int:
    """Remove row folders in ``parent`` whose process is gone (killed before it could clean up);
    returns how many. A folder of a live process, or one not named and made like ours, is kept."""
    removed = 0
    for name in os.listdir(parent):
        pid = name[len(PREFIX) :].split("-", 1)[0]
        path = os.path.join(parent, name)
        if not name.startswith(PREFIX) or not pid.isdigit() or not stat.S_ISDIR(os.lstat(path).st_mode):
            continue
        if pid_alive(int(pid)):  # alive (or another user's: not ours to judge)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


class RowFolder:
    """A private temporary folder for RowFiles (mode 0700), removed with everything in it on exit."""

    def __init__(self, parent: str):
        from bneck.core.errors import ConfigError

        make_private_folder(os.path.dirname(os.path.abspath(parent)))  # the cache folder itself, private if new
        try:
            os.mkdir(parent, 0o700)
        except FileExistsError:
            pass
        mode = os.lstat(parent).st_mode
        if not stat.S_ISDIR(mode):  # a link or a file planted there: never followed
            what = "a symbolic link" if stat.S_ISLNK(mode) else "a file" if stat.S_ISREG(mode) else kind_of(mode)
            raise ConfigError(
                f"{parent} must be a folder (bneck keeps a fine-tune's temporary row files there), "
                f"but it is {what}. Remove it, or give another --cache-dir."
            )
        remove_abandoned(parent)
        self.path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)
        self.files: list[RowFile] = []

    def new(self, name: str, rows: int, shape: Sequence[int], stored: str = "float32") -> RowFile:
        self.files.append(RowFile(self.path, name, rows, shape, stored))
        return self.files[-1]

    def __enter__(self) -> RowFolder:
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files:
            f.close()
        shutil.rmtree(self.path, ignore_errors=True)
