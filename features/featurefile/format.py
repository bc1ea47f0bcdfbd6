"""The per-split HDF5 feature file: what it holds, how it is written, how it is read.

``OUT/<split>.h5`` datasets: ``features`` (N, ...) chunked, ``labels`` (N,) int64,
``paths`` (N,) UTF-8 relative to the data root, ``sha256`` (N,) image digests,
``quarantine`` (K, 2) path and reason. Attributes describe the extractor, the
dataset and the software versions. Two checksums cover every byte: ``features_sha256``
the features, ``content_sha256`` everything else (datasets and attributes). The file
is created under a temporary name and moved into place, and ``complete`` is written
last, so a file that has it was written whole. What reading checks is in
``featurefile.validate``; every reader here goes through it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import cast

import h5py
import numpy as np

from bneck.core.atomic import atomic_target
from bneck.core.errors import BneckWarning, FeatureFileError
from bneck.core.files import kind_of
from bneck.core.hashing import RowsDigest, sha256_array
from bneck.core.versions import versions
from bneck.features.backbones.spec import SCHEMA_VERSION
from bneck.features.featurefile.storage import refuse_nonfinite, row_dataset_options
from bneck.features.featurefile.validate import (
    FILE_FORMAT,
    check_finite,
    content_digest,
    decode_attrs,
    rebuild_hint,
    strings,
    validate,
)

_STR = h5py.string_dtype("utf-8")


@dataclass
class SplitContent:
    """Rows of one split in output order, plus what was left out and why."""

    split: str
    paths: list[str]
    labels: list[int]
    shas: list[str]
    quarantine: list[tuple[str, str]]


def write_split_file(
    path: str,
    content: SplitContent,
    attrs: dict,
    row_shape: tuple,
    dtype: str,
    fill: Callable[[Callable[[int, np.ndarray], None]], None],
) -> None:
    """Write a split file atomically. ``fill(sink)`` must call ``sink(start, rows)`` for all rows."""
    n = len(content.paths)
    digest = RowsDigest()
    written = [0]

    with atomic_target(path) as tmp:
        with h5py.File(tmp, "w") as f:
            features = f.create_dataset(
                "features",
                shape=(n,) + tuple(row_shape),
                dtype=dtype,
                **row_dataset_options(n, tuple(row_shape), np.dtype(dtype).itemsize),
            )

            def sink(start: int, rows: np.ndarray) -> None:
                if start != written[0]:
                    raise RuntimeError("rows must arrive in order")
                rows = np.ascontiguousarray(rows, dtype=dtype)
                refuse_nonfinite(rows, start)
                features[start : start + len(rows)] = rows
                digest.update(rows)
                written[0] += len(rows)

            fill(sink)
            if written[0] != n:
                raise RuntimeError(f"wrote {written[0]} of {n} rows")
            _write_rest(f, content, attrs, digest.hexdigest())


def write_sharded_split_file(
    path: str, content: SplitContent, attrs: dict, shards: list[tuple[str, int]], row_shape: tuple, dtype: str
) -> None:
    """Write a split file whose features are a virtual dataset over shard files, atomically.

    ``shards`` lists (shard file path relative to ``path``'s folder, rows) in row order;
    their rows are read once here, to compute the split's features checksum.
    """
    n = len(content.paths)
    if sum(rows for _, rows in shards) != n:
        raise RuntimeError("the shards do not hold exactly the split's rows")
    folder = os.path.dirname(os.path.abspath(path))
    layout = h5py.VirtualLayout(shape=(n,) + tuple(row_shape), dtype=dtype)
    digest, start = RowsDigest(), 0
    for name, rows in shards:
        with h5py.File(os.path.join(folder, name), "r") as shard:
            digest.update(shard["features"][()], dtype=dtype)
        layout[start : start + rows] = h5py.VirtualSource(name, "features", shape=(rows,) + tuple(row_shape))
        start += rows
    with atomic_target(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_virtual_dataset("features", layout, fillvalue=np.nan)
            _write_rest(f, content, dict(attrs, shards=[name for name, _ in shards]), digest.hexdigest())


def _write_rest(f: h5py.File, content: SplitContent, attrs: dict, features_sha256: str) -> None:
    """Write everything but the features, both checksums, then the ``complete`` flag."""
    import json

    n = len(content.paths)
    f.create_dataset("labels", data=np.asarray(content.labels, dtype=np.int64))
    f.create_dataset("paths", data=np.array(content.paths, dtype=object), dtype=_STR)
    f.create_dataset("sha256", data=np.array(content.shas, dtype="S64"))
    q = np.array(content.quarantine, dtype=object).reshape(len(content.quarantine), 2)
    f.create_dataset("quarantine", data=q, dtype=_STR)
    for name, value in attrs.items():
        if value is not None:
            f.attrs[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    f.attrs["split"] = content.split
    f.attrs["n_images"] = n
    f.attrs["features_sha256"] = features_sha256
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["file_format"] = FILE_FORMAT
    f.attrs["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name, value in versions().items():
        f.attrs[name] = value
    f.attrs["content_sha256"] = content_digest(f, decode_attrs(f))
    f.attrs["complete"] = True  # written last


@dataclass
class FeatureFile:
    """A validated split file, loaded in memory (``RowReader`` streams it instead)."""

    path: str
    attrs: dict
    features: np.ndarray
    labels: np.ndarray
    paths: list[str]
    sha256: list[str]
    quarantine: list[tuple[str, str]]

    @property
    def class_names(self) -> list[str]:
        """Return the class names; label i is ``class_names[i]``."""
        return self.attrs["class_names"]

    @property
    def extractor_key(self) -> str:
        """Return the extractor key the rows were made with."""
        return self.attrs["extractor_key"]


def _open(path: str) -> h5py.File:
    if os.path.isdir(path):
        raise FeatureFileError(
            f"{path} is a folder, not a feature file: give one of its split files, e.g. "
            f"{os.path.join(path, 'test.h5')}."
        )
    if os.path.exists(path) and not os.path.isfile(path):
        raise FeatureFileError(
            f"{path} is {kind_of(os.stat(path).st_mode)}, not a feature file; bneck reads only regular files."
        )
    if not os.path.isfile(path):
        raise FeatureFileError(f"feature file not found: {path}. Create it with `bneck extract DATA_DIR --out FOLDER`.")
    _ignore_vds_prefix()
    return h5py.File(path, "r")


def _ignore_vds_prefix() -> None:
    """Unset HDF5_VDS_PREFIX (once, saying so): libhdf5 would read a sharded file's rows from shard files
    under that folder instead of beside the file, where the file's checks found them."""
    value = os.environ.pop("HDF5_VDS_PREFIX", None)
    if value:
        warnings.warn(
            f"bneck ignores HDF5_VDS_PREFIX={value!r} (unset for this process): a feature file written by "
            "--engine ray reads its shard files from beside itself, where they were checked.",
            BneckWarning,
            stacklevel=3,
        )


def _unreadable(path: str, exc: Exception) -> FeatureFileError:
    return FeatureFileError(
        f"{path} cannot be read as a feature file ({type(exc).__name__}: {exc}); "
        f"it is truncated or damaged. {rebuild_hint(path)}"
    )


_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError)


def read_features(path: str, verify: bool = True) -> FeatureFile:
    """Open, validate and load a split file.

    With ``verify`` (the default) the features are checked against their stored
    sha256 and for NaN/infinity. Raises FeatureFileError for a missing, truncated,
    incomplete, tampered or otherwise unusable file.
    """
    try:
        with _open(path) as f:
            attrs = validate(path, f)
            features = f["features"][()]
            labels = f["labels"][()]
            paths = strings(f["paths"][()])
            shas = strings(f["sha256"][()])
            # (K, 2) rows: validate() checked the shape before anything is read
            quarantine = [cast("tuple[str, str]", tuple(strings(row))) for row in f["quarantine"][()]]
    except FeatureFileError:
        raise
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    if verify:
        if sha256_array(features) != attrs["features_sha256"]:
            raise FeatureFileError(
                f"{path}: the features do not match their stored checksum "
                f"(features_sha256); the file is damaged or was edited. "
                f"{rebuild_hint(path)}"
            )
        check_finite(path, features)
    return FeatureFile(path, attrs, features, labels, paths, shas, quarantine)


def read_summary(path: str) -> dict:
    """Return a validated split file's attributes plus its shape, labels, paths and image hashes
    (``features_shape``, ``labels``, ``paths``, ``sha256``), without loading the features."""
    try:
        with _open(path) as f:
            attrs = validate(path, f)
            attrs["features_shape"] = list(f["features"].shape)
            attrs["quarantined"] = int(f["quarantine"].shape[0])
            attrs["labels"] = f["labels"][()].astype(np.int64)
            attrs["paths"] = strings(f["paths"][()])
            attrs["sha256"] = strings(f["sha256"][()])
            return attrs
    except FeatureFileError:
        raise
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


class RowReader:
    """Read a split file's features in blocks of ``rows``, every byte checked.

    Opening reads the file once in order: its features must match ``features_sha256``,
    and each block's own sha256 is kept; every later read of a block, in any order,
    is checked against it (and for NaN/infinity). Raises FeatureFileError.
    """

    def __init__(self, path: str, rows: int):
        self.path, self.rows = path, max(1, int(rows))
        whole, self._digests = RowsDigest(), []
        try:
            with _open(path) as f:
                attrs = validate(path, f)
                self.n = f["features"].shape[0]
                for start in range(0, self.n, self.rows):
                    block = f["features"][start : start + self.rows]
                    whole.update(block)
                    self._digests.append(sha256_array(block))
        except FeatureFileError:
            raise
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from None
        if whole.hexdigest() != attrs["features_sha256"]:
            raise FeatureFileError(
                f"{path}: the features do not match their stored checksum (features_sha256). {rebuild_hint(path)}"
            )

    def __len__(self) -> int:
        return len(self._digests)

    def blocks(self, order: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, block) for the block indices in ``order`` (default: in order)."""
        with h5py.File(self.path, "r") as f:
            feats = f["features"]
            for i in range(len(self)) if order is None else order:
                start = int(i) * self.rows
                block = np.ascontiguousarray(feats[start : start + self.rows])
                if sha256_array(block) != self._digests[int(i)]:
                    raise FeatureFileError(
                        f"{self.path} changed while it was being read (rows "
                        f"{start}-{start + len(block) - 1} no longer match). "
                        f"{rebuild_hint(self.path)}"
                    )
                check_finite(self.path, block, start)
                yield start, block


def holds(path: str, attrs: dict, content: SplitContent, features_sha256: str | None = None) -> bool:
    """Return True when ``path`` is a valid, undamaged file holding exactly ``content`` and ``attrs``
    (and, given ``features_sha256``, exactly those feature bytes: the rows the cache holds).

    Lets a rerun on unchanged images skip rewriting the file. Any doubt means False.
    """
    import json

    if not os.path.isfile(path):
        return False
    wanted = json.loads(json.dumps({k: v for k, v in attrs.items() if v is not None}))
    try:
        with h5py.File(path, "r") as f:
            found = validate(path, f)
            same = (
                all(found.get(k) == v for k, v in wanted.items())
                and found.get("split") == content.split
                and f["labels"][()].tolist() == list(content.labels)
                and strings(f["sha256"][()]) == content.shas
                and strings(f["paths"][()]) == content.paths
                and [tuple(strings(r)) for r in f["quarantine"][()]] == list(content.quarantine)
            )
            if not same or features_sha256 not in (None, found["features_sha256"]):
                return False
            digest = RowsDigest()
            ds = f["features"]
            step = max(1, ds.chunks[0] if ds.chunks else len(ds))
            for start in range(0, ds.shape[0], step):
                digest.update(ds[start : start + step])
            return digest.hexdigest() == found["features_sha256"]
    except (FeatureFileError, *_READ_ERRORS):
        return False
