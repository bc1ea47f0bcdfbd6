"""A cache chunk (or a Ray shard) as a file: written in one piece with its checksums, read back
whole and checked: flags, extractor key, schema, layout, storage (``featurefile.storage``), and
both checksums.
"""

from __future__ import annotations

import io
import os
import re

import h5py
import numpy as np

from bneck.core.atomic import atomic_target
from bneck.core.files import is_regular
from bneck.core.hashing import sha256_array
from bneck.features.backbones.spec import SCHEMA_VERSION
from bneck.features.featurefile.storage import holds_unrounded, is_rounded, nonfinite_rows, storage_problem, write_rows

CHUNK_PREFIX = "rows-"
KEY_NAME = re.compile(r"^[0-9a-f]{64}$")  # an extractor key or an image's sha256, as bneck writes them


class CorruptChunk(Exception):
    """A committed chunk no longer matches its own checksum."""


def chunk_files(folder: str) -> list[str]:
    """Return the entry's chunk files: regular files named like a chunk. Anything else under such a
    name (a FIFO, a folder, a device, a link someone planted) is never opened, read or removed."""
    return sorted(
        os.path.join(folder, n)
        for n in os.listdir(folder)
        if n.startswith(CHUNK_PREFIX) and n.endswith(".h5") and is_regular(os.path.join(folder, n))
    )


def _chunk_shas(path: str, key: str) -> tuple[list[str] | None, str | None]:
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
                return None, (f"schema_version {f.attrs.get('schema_version')!r}, this bneck writes {SCHEMA_VERSION}")
            shas, feats = f["sha256"], f["features"]
            layout = _layout_problem(shas, feats)
            stored = layout or storage_problem(shas) or storage_problem(feats, inflate=False)  # rows: on load
            if stored:
                return None, stored
            raw = shas[()]
            expected = f.attrs.get("sha256_sha256")
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        return None, f"unreadable ({str(exc)[:80] or type(exc).__name__}); truncated?"
    if expected is not None and sha256_array(raw) != expected:
        return None, "its list of image hashes fails its checksum (damaged bytes)"
    listed = [s.decode("ascii", "replace") for s in raw]
    if not all(KEY_NAME.match(s) for s in listed):
        return None, "lists image hashes that are not 64 hexadecimal digits"
    return listed, None


def _layout_problem(shas, feats) -> str | None:
    """What is wrong with a chunk's datasets as bneck writes them, or None: sha256 (n,) of 64-byte
    text, features (n, ...) float32 or float16."""
    if not isinstance(shas, h5py.Dataset) or not isinstance(feats, h5py.Dataset):
        return "lacks its sha256 or features dataset"
    if shas.dtype != np.dtype("S64") or shas.ndim != 1:
        return f"stores its image hashes as {shas.dtype}{shas.shape}, not 64-byte text (n,)"
    if feats.dtype.name not in ("float32", "float16") or feats.ndim < 2 or feats.shape[0] != shas.shape[0]:
        return f"stores features {feats.dtype}{feats.shape} for {shas.shape[0]} image hashes"
    return None


def write_rows_file(
    path: str, key: str, shas: list[str], feats: np.ndarray, attrs: dict | None = None, shuffle: bool = False
) -> None:
    """Write rows (a cache chunk, or a Ray shard) atomically, with their checksums and ``attrs``,
    compressed as ``storage`` says (byte-shuffled first when ``shuffle``).

    The file is made in memory and written in one piece: libhdf5 never writes compressed chunks to
    the disk itself, where a full disk fails it late (closing the file) and can crash it."""
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        _fill_chunk(f, key, np.array(shas, dtype="S64"))
        write_rows(f, "features", feats, shuffle)
        f.attrs["features_sha256"] = sha256_array(feats)
        for name, value in (attrs or {}).items():
            f.attrs[name] = value
        f.attrs["complete"] = True  # written last
    with atomic_target(path) as tmp, open(tmp, "wb") as handle:
        handle.write(image.getbuffer())


def read_rows_file(path: str, key: str, dtype=None) -> tuple[list[str] | None, str | None]:
    """Return (the image hashes of a rows file, None) after reading it in full, or (None, problem).

    Checks the flags and the hash list (``_chunk_shas``), the features' checksum, that there
    are as many rows as hashes, and for an entry of rounded views (``dtype``) that its values are.
    """
    shas, problem = _chunk_shas(path, key)
    if shas is None:
        return None, problem
    try:
        feats = load_chunk(path, finite=False)
        rows = len(feats)
        if len(nonfinite_rows(feats)):
            return None, "holds rows of NaN or infinity (bneck never stores such rows)"
        if is_rounded(dtype) and holds_unrounded(feats, dtype):
            return None, f"holds values that are not {dtype} numbers, which its entry stores (forged or damaged)"
    except CorruptChunk:
        return None, "its features are unreadable or fail their checksum (damaged bytes)"
    if rows != len(shas):
        return None, "holds a different number of rows and hashes"
    return shas, None


def _fill_chunk(f: h5py.File, key: str, shas: np.ndarray) -> None:
    f.create_dataset("sha256", data=shas)
    f.attrs["sha256_sha256"] = sha256_array(shas)
    f.attrs["extractor_key"] = key
    f.attrs["schema_version"] = SCHEMA_VERSION


def load_chunk(path: str, finite: bool = True, dtype=None) -> np.ndarray:
    """Return a chunk's rows after checking its storage and checksum, (``finite``) that every row is
    finite and, for an entry of rounded views (``dtype``), that every value is such a number; raises
    CorruptChunk otherwise."""
    try:
        with h5py.File(path, "r") as f:
            if storage_problem(f["features"]):  # a filter never written, or a decompression bomb
                raise CorruptChunk(path)
            feats = f["features"][()]
            expected = f.attrs.get("features_sha256")
    except (OSError, KeyError, RuntimeError):
        raise CorruptChunk(path) from None
    if expected != sha256_array(feats) or (finite and len(nonfinite_rows(feats))):
        raise CorruptChunk(path)
    if is_rounded(dtype) and holds_unrounded(feats, dtype):
        raise CorruptChunk(path)
    return feats
