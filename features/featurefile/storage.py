"""How bneck stores rows of features in HDF5, and the one rule for reading stored rows back.

Written (feature files; cache chunks and Ray shards whose rows are mostly zeros): chunks of
whole rows, about 1 MB each, compressed with deflate level 1 (gzip: in every HDF5 build, so any HDF5 reader opens the
files), lossless. Rows after a ReLU are mostly zeros: MobileNetV2's ``out_relu`` rows (88 %
zeros) take 0.17 of their size; rows without zeros about 0.93 (``scripts/bench_storage.py``).

Fine-tuning views stored with ``--view-precision bfloat16`` or ``e8m5`` (``spec.dtype``) are
rounded first (``ROUNDED_DTYPES``: bfloat16 keeps 8 significant bits, a relative error of at most
2**-8, inside ``equivalence.TOLERANCE``; e8m5 keeps bfloat16's exponent and 6 significant bits, at
most 2**-6), kept float32 with their low bits zero and byte-shuffled before deflate: bfloat16 0.37,
e8m5 0.31 of MobileNetV2's dense ``block_5_add`` rows (``scripts/bench_storage.py``).

Read: every dataset may use deflate and shuffle only (any other filter would be a plugin,
that is code, or a format this module never writes), its chunks hold at most
``MAX_CHUNK_BYTES`` (or one row), and it may not declare more than ``MAX_INFLATION`` times
the bytes it stores: a small file cannot claim gigabytes of rows.
"""

from __future__ import annotations

import math
import zlib

import h5py
import numpy as np

from bneck.core.errors import FeatureFileError

BFLOAT16 = "bfloat16"
E8M5 = "e8m5"
# What fine-tuning views may be rounded to, by the explicit mantissa bits each keeps (float32 has 23;
# both keep float32's 8 exponent bits, so the rounded values are exact in bfloat16).
ROUNDED_DTYPES = {BFLOAT16: 7, E8M5: 5}
DEFLATE_LEVEL = 1
CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 64 << 20
# Real rows compress at most 10-fold (MobileNetV2 out_relu, 90 % zeros); 256 leaves room for
# sparser layers and still bounds what a file can cost in memory by its size on disk.
MAX_INFLATION = 256
ALLOWED_FILTERS = {h5py.h5z.FILTER_DEFLATE: "deflate", h5py.h5z.FILTER_SHUFFLE: "shuffle"}


def row_dataset_options(n: int, row_shape: tuple, itemsize: int, shuffle: bool = False) -> dict:
    """Return ``create_dataset`` keywords for ``n`` rows of ``row_shape``: whole rows per chunk
    (about ``CHUNK_BYTES``), deflate level 1, byte-shuffled when ``shuffle``."""
    if n == 0:
        return {}
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    rows = max(1, min(n, CHUNK_BYTES // row_bytes))
    return {
        "chunks": (rows,) + tuple(row_shape),
        "compression": "gzip",
        "compression_opts": DEFLATE_LEVEL,
        "shuffle": shuffle,
    }


def nonfinite_rows(rows: np.ndarray) -> np.ndarray:
    """Return the indices of the rows holding NaN or infinity (the one finiteness rule of every row)."""
    return np.flatnonzero(~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1))


def refuse_nonfinite(rows: np.ndarray, first_row: int = 0) -> None:
    """Refuse, before they are stored anywhere (feature file, cache chunk, shard), rows with NaN or infinity."""
    bad = nonfinite_rows(rows)
    if len(bad):
        raise FeatureFileError(
            f"the network computed {len(bad)} feature row(s) holding NaN or infinity (first: row "
            f"{first_row + int(bad[0])}), and bneck never stores such rows: a classifier trained on them would be "
            "meaningless. The weights are damaged, or the inputs are outside what the network takes (an "
            "augmentation value far outside its range). Rows stored before are intact and reused."
        )


def write_rows(group: h5py.Group, name: str, rows: np.ndarray, shuffle: bool = False) -> h5py.Dataset:
    """Create dataset ``name`` holding ``rows`` the way bneck stores rows: compressed when they are
    mostly zeros (post-ReLU features) or ``shuffle`` (bfloat16 views), else as they are (dense float
    rows deflate to about 0.9 of their size at about 4 ms a row: not worth it). Rows holding NaN or
    infinity are refused (``refuse_nonfinite``)."""
    refuse_nonfinite(rows)
    compress = shuffle or np.count_nonzero(rows) <= rows.size // 2
    options = row_dataset_options(len(rows), rows.shape[1:], rows.dtype.itemsize, shuffle) if compress else {}
    return group.create_dataset(name, data=rows, **options)


def round_mantissa(rows: np.ndarray, bits: int) -> np.ndarray:
    """Return float32 ``rows`` rounded to ``bits`` explicit mantissa bits (ties to even), still float32.

    NaN and infinity stay what they are; finite values that round beyond float32's range
    become infinity, as a bfloat16 cast does."""
    drop, low = np.uint32(23 - bits), _dropped_bits(bits)
    words = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32)
    rounded = (words + (low >> np.uint32(1)) + ((words >> drop) & np.uint32(1))) & ~low
    special = (words & np.uint32(0x7F800000)) == np.uint32(0x7F800000)  # NaN and infinity: unchanged
    return np.where(special, words, rounded).view(np.float32)


def _dropped_bits(bits: int) -> np.uint32:
    """The float32 mantissa bits that rounding to ``bits`` explicit mantissa bits clears, as a mask."""
    return np.uint32((1 << (23 - bits)) - 1)


def round_to_bfloat16(rows: np.ndarray) -> np.ndarray:
    """Return float32 ``rows`` rounded to the nearest bfloat16 (ties to even), still float32."""
    return round_mantissa(rows, ROUNDED_DTYPES[BFLOAT16])


def round_rows(rows: np.ndarray, dtype: str) -> np.ndarray:
    """Return ``rows`` as an entry of ``dtype`` stores them: rounded for ``ROUNDED_DTYPES``, else as they are."""
    return round_mantissa(rows, ROUNDED_DTYPES[dtype]) if is_rounded(dtype) else rows


def is_rounded(dtype) -> bool:
    """Whether an entry recording ``dtype`` (any JSON value, as a meta.json may hold) stores rounded views."""
    return isinstance(dtype, str) and dtype in ROUNDED_DTYPES


def holds_unrounded(rows: np.ndarray, dtype: str) -> bool:
    """Whether float32 ``rows`` hold a value that is not a ``dtype`` number (a low bit ``round_rows`` clears
    is set): rows an entry of that dtype never stores. Such a value could also round beyond float32's
    range when read back as bfloat16."""
    if rows.dtype != np.float32:
        return True
    words = np.ascontiguousarray(rows).view(np.uint32)
    return bool(np.bitwise_and(words, _dropped_bits(ROUNDED_DTYPES[dtype])).any())


def rounding_error(dtype: str) -> float:
    """Return the largest relative error ``round_rows`` makes for ``dtype`` (0 when it does not round)."""
    return 2.0 ** -(ROUNDED_DTYPES[dtype] + 1) if is_rounded(dtype) else 0.0


# The filter pipelines bneck writes, as HDF5 applies them on writing: deflate alone, or shuffle
# then deflate. Anything else (two deflates, lzf, a plugin) is refused unread.
PIPELINES = ((), (h5py.h5z.FILTER_DEFLATE,), (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE))
VLEN_REFERENCE_BYTES = 16  # what a variable-length string costs in the dataset itself


def storage_problem(ds: h5py.Dataset, inflate: bool = True) -> str | None:
    """Return what makes ``ds`` unsafe to read, or None: a filter pipeline bneck never writes, oversized
    chunks, more declared than stored, and (with ``inflate``) any compressed chunk that does not
    inflate to exactly its declared size (damaged, or a decompression bomb: libhdf5 would inflate
    it whole before looking at its size)."""
    plist = ds.id.get_create_plist()
    codes = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
    if codes not in PIPELINES:
        names = [ALLOWED_FILTERS.get(c, f"filter {c}") for c in codes]
        return f"stores {ds.name} through the HDF5 filters {names}; bneck writes deflate, or shuffle then deflate"
    itemsize = VLEN_REFERENCE_BYTES if ds.dtype.kind == "O" else ds.dtype.itemsize
    declared, stored = ds.size * itemsize, ds.id.get_storage_size()
    if ds.chunks:
        chunk = int(np.prod(ds.chunks, dtype=np.int64)) * itemsize
        row = int(np.prod(ds.shape[1:], dtype=np.int64)) * itemsize
        if chunk > max(MAX_CHUNK_BYTES, row):
            return f"stores {ds.name} in chunks of {chunk:,} bytes (at most {MAX_CHUNK_BYTES:,}, or one row)"
    if not codes or ds.dtype.kind == "O":
        if stored < declared:
            return f"declares {ds.name} of shape {ds.shape} ({declared:,} bytes) but stores only {stored:,} bytes"
        return None if not codes else f"stores the text of {ds.name} compressed, which bneck never does"
    if declared > MAX_INFLATION * max(stored, 1):
        return (
            f"declares {ds.name} of shape {ds.shape} ({declared:,} bytes) from {stored:,} compressed "
            f"bytes, more than {MAX_INFLATION} times as many (real rows compress at most about 10-fold)"
        )
    return _chunk_problem(ds) if inflate else None


def _chunk_problem(ds: h5py.Dataset) -> str | None:
    """Inflate every stored chunk of compressed ``ds`` with zlib, never past its declared size."""
    size = int(np.prod(ds.chunks, dtype=np.int64)) * ds.dtype.itemsize
    room = math.prod(math.ceil(n / c) for n, c in zip(ds.shape, ds.chunks))
    count = ds.id.get_num_chunks()
    if count > room:
        return f"stores {count} chunks of {ds.name}, more than its shape has room for ({room})"
    for i in range(count):
        info = ds.id.get_chunk_info(i)
        if info.filter_mask:
            return f"stores a chunk of {ds.name} that skips its filters"
        raw = ds.id.read_direct_chunk(info.chunk_offset)[1]
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(raw, size + 1)
        except zlib.error:
            out = b""
        if len(out) != size or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            return (
                f"stores a chunk of {ds.name} that does not inflate to its declared {size:,} bytes "
                f"(damaged, or a decompression bomb)"
            )
    return None
