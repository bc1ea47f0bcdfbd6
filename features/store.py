"""The per-split HDF5 feature file: what it holds, how it is written, how it is trusted.

``OUT/<split>.h5`` datasets: ``features`` (N, ...) chunked, ``labels`` (N,) int,
``paths`` (N,) UTF-8 relative to the data root, ``sha256`` (N,) image digests,
``quarantine`` (K, 2) path and reason. Attributes describe the extractor, the
dataset and the software versions; ``complete`` is written last, and the file is
created under a temporary name and moved into place, so a file that has it was
written whole.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from typing import Callable

import h5py
import numpy as np

from .atomic import atomic_target
from .errors import FeatureFileError
from .key import KEY_FIELDS, OPTIONAL_KEY_FIELDS, SCHEMA_VERSION, extractor_key

_STR = h5py.string_dtype("utf-8")
REQUIRED_DATASETS = ("features", "labels", "paths", "sha256", "quarantine")
# Attributes stored as JSON text (lists, dicts, and the full extractor spec, whose
# ``alpha`` may be None, which HDF5 attributes cannot hold).
_JSON_ATTRS = ("class_names", "split_spec", "excluded_classes", "extractor")


def versions() -> dict:
    """Return the versions of the software that makes features."""
    out = {"python": platform.python_version()}
    for dist, attr in (("bneck", "bneck_version"), ("tensorflow", "tensorflow_version"),
                       ("keras", "keras_version"), ("h5py", "h5py_version"),
                       ("numpy", "numpy_version"), ("pillow", "pillow_version")):
        try:
            out[attr] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[attr] = "unknown"
    return out


def _rebuild_hint(path: str) -> str:
    return (f"Delete {path} and run `bneck extract` again to rebuild it (cached rows are reused, "
            "so this is quick).")


@dataclass
class SplitContent:
    """Rows of one split in output order, plus what was left out and why."""

    split: str
    paths: list[str]
    labels: list[int]
    shas: list[str]
    quarantine: list[tuple[str, str]]


def write_split_file(path: str, content: SplitContent, attrs: dict, row_shape: tuple,
                     dtype: str, fill: Callable[[Callable[[int, np.ndarray], None]], None]) -> None:
    """Write a split file atomically. ``fill(sink)`` must call ``sink(start, rows)`` for all rows."""
    n = len(content.paths)
    digest = hashlib.sha256()
    written = [0]

    with atomic_target(path) as tmp:
        with h5py.File(tmp, "w") as f:
            chunk_rows = max(1, min(n, (1 << 20) // max(1, int(np.prod(row_shape)) * 4))) if n else 1
            features = f.create_dataset("features", shape=(n,) + tuple(row_shape), dtype=dtype,
                                        chunks=(chunk_rows,) + tuple(row_shape) if n else None)

            def sink(start: int, rows: np.ndarray) -> None:
                if start != written[0]:
                    raise RuntimeError("rows must arrive in order")
                rows = np.ascontiguousarray(rows, dtype=dtype)
                features[start:start + len(rows)] = rows
                digest.update(rows.tobytes())
                written[0] += len(rows)

            fill(sink)
            if written[0] != n:
                raise RuntimeError(f"wrote {written[0]} of {n} rows")
            _write_rest(f, content, attrs, digest.hexdigest())


def write_sharded_split_file(path: str, content: SplitContent, attrs: dict, shards: list[tuple[str, int]],
                             row_shape: tuple, dtype: str) -> None:
    """Write a split file whose features are a virtual dataset over shard files, atomically.

    ``shards`` lists (shard file path relative to ``path``'s folder, rows) in row order;
    their rows are read once here, to compute the split's features checksum.
    """
    n = len(content.paths)
    if sum(rows for _, rows in shards) != n:
        raise RuntimeError("the shards do not hold exactly the split's rows")
    folder = os.path.dirname(os.path.abspath(path))
    layout = h5py.VirtualLayout(shape=(n,) + tuple(row_shape), dtype=dtype)
    digest, start = hashlib.sha256(), 0
    for name, rows in shards:
        with h5py.File(os.path.join(folder, name), "r") as shard:
            digest.update(np.ascontiguousarray(shard["features"][()], dtype=dtype).tobytes())
        layout[start:start + rows] = h5py.VirtualSource(name, "features", shape=(rows,) + tuple(row_shape))
        start += rows
    with atomic_target(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_virtual_dataset("features", layout, fillvalue=np.nan)
            _write_rest(f, content, dict(attrs, shards=[name for name, _ in shards]), digest.hexdigest())


def _write_rest(f: h5py.File, content: SplitContent, attrs: dict, features_sha256: str) -> None:
    """Write everything but the features, then the ``complete`` flag."""
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
    f.attrs["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name, value in versions().items():
        f.attrs[name] = value
    f.attrs["complete"] = True  # written last


@dataclass
class FeatureFile:
    """A validated split file, loaded in memory (use ``h5py`` directly to stream)."""

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


def _decode_attrs(f: h5py.File) -> dict:
    out = {}
    for name, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, np.generic):
            value = value.item()
        if name in _JSON_ATTRS and isinstance(value, str):
            value = json.loads(value)
        out[name] = value
    return out


def validate(path: str, f: h5py.File) -> dict:
    """Check a split file's structure and attributes; returns its decoded attributes.

    Raises FeatureFileError naming the file, the problem and how to rebuild it.
    """
    attrs = _decode_attrs(f)
    if not attrs.get("complete", False):
        raise FeatureFileError(f"{path} is incomplete (no 'complete' flag): it was not written "
                               f"to the end. {_rebuild_hint(path)}")
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise FeatureFileError(
            f"{path} has schema_version={attrs.get('schema_version')!r}, but this bneck reads "
            f"schema_version={SCHEMA_VERSION}. {_rebuild_hint(path)}")
    missing = [d for d in REQUIRED_DATASETS if d not in f]
    missing += [a for a in ("extractor", "extractor_key", "class_names", "features_sha256")
                if a not in attrs]
    if missing:
        raise FeatureFileError(f"{path} lacks {', '.join(missing)}: it was not written by "
                               f"bneck extract or has been altered. {_rebuild_hint(path)}")
    n = f["features"].shape[0]
    counts = {d: f[d].shape[0] for d in ("labels", "paths", "sha256")}
    if any(c != n for c in counts.values()) or attrs.get("n_images") != n:
        raise FeatureFileError(f"{path} has inconsistent row counts (features: {n}, "
                               f"{', '.join(f'{k}: {v}' for k, v in counts.items())}, "
                               f"n_images: {attrs.get('n_images')}). {_rebuild_hint(path)}")
    if f["features"].is_virtual:
        _check_shards(path, f["features"])
    spec = attrs["extractor"]
    if any(k not in spec for k in KEY_FIELDS if k not in OPTIONAL_KEY_FIELDS) \
            or extractor_key(spec) != attrs["extractor_key"] \
            or any(attrs.get(k, spec.get(k)) != spec.get(k) for k in KEY_FIELDS if spec.get(k) is not None):
        raise FeatureFileError(f"{path} has attributes that do not match its extractor_key: "
                               f"it has been edited. {_rebuild_hint(path)}")
    return attrs


def _check_shards(path: str, features: h5py.Dataset) -> None:
    """Refuse a sharded split file whose shard files are missing, truncated or incomplete.

    HDF5 would read a missing source as fill values; this is checked on every open
    instead, and the features checksum catches any other change.
    """
    folder = os.path.dirname(os.path.abspath(path))
    for source in features.virtual_sources():
        shard = os.path.join(folder, source.file_name)
        problem = None
        if not os.path.isfile(shard):
            problem = "is missing"
        else:
            try:
                with h5py.File(shard, "r") as f:
                    if not f.attrs.get("complete", False):
                        problem = "is incomplete (no 'complete' flag)"
                    else:
                        low, high = source.vspace.get_select_bounds()
                        expected = tuple(h - lo + 1 for lo, h in zip(low, high))
                        if f["features"].shape != expected:
                            problem = f"holds features of shape {f['features'].shape}, not {expected}"
            except (OSError, KeyError, RuntimeError):
                problem = "cannot be read (truncated or damaged)"
        if problem:
            raise FeatureFileError(
                f"{path} reads its features from the shard file {shard}, which {problem}. Rerun the "
                f"same `bneck extract --engine ray` command: finished shards are kept and only the "
                f"missing ones are computed.")


def read_features(path: str, verify: bool = True) -> FeatureFile:
    """Open, validate and load a split file.

    With ``verify`` the features are checked against their stored sha256. Raises
    FeatureFileError for a missing, truncated, incomplete or tampered file.
    """
    if not os.path.isfile(path):
        raise FeatureFileError(f"feature file not found: {path}. Create it with "
                               "`bneck extract DATA_DIR --out FOLDER`.")
    try:
        with h5py.File(path, "r") as f:
            attrs = validate(path, f)
            features = f["features"][()]
            labels = f["labels"][()]
            paths = _strings(f["paths"][()])
            shas = [s.decode("ascii") for s in f["sha256"][()]]
            quarantine = [tuple(_strings(row)) for row in f["quarantine"][()]]
    except FeatureFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise FeatureFileError(f"{path} cannot be read as a feature file "
                               f"({type(exc).__name__}: {exc}); it is truncated or damaged. "
                               f"{_rebuild_hint(path)}") from None
    if verify and hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest() \
            != attrs["features_sha256"]:
        raise FeatureFileError(f"{path}: the features do not match their stored checksum "
                               f"(features_sha256); the file is damaged or was edited. "
                               f"{_rebuild_hint(path)}")
    return FeatureFile(path, attrs, features, labels, paths, shas, quarantine)


def read_summary(path: str) -> dict:
    """Return a validated split file's attributes plus shapes, without loading features."""
    try:
        with h5py.File(path, "r") as f:
            attrs = validate(path, f)
            attrs["features_shape"] = list(f["features"].shape)
            attrs["quarantined"] = int(f["quarantine"].shape[0])
            return attrs
    except FeatureFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise FeatureFileError(f"{path} cannot be read as a feature file "
                               f"({type(exc).__name__}: {exc}). {_rebuild_hint(path)}") from None


def holds(path: str, key: str, class_names: list[str], content: SplitContent) -> bool:
    """Return True when ``path`` is a valid, undamaged file holding exactly ``content``.

    Lets a rerun on unchanged images skip rewriting the file. Any doubt means False.
    """
    if not os.path.isfile(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            attrs = validate(path, f)
            same = (attrs["extractor_key"] == key and attrs["class_names"] == class_names
                    and attrs.get("split") == content.split
                    and f["labels"][()].tolist() == list(content.labels)
                    and [s.decode("ascii") for s in f["sha256"][()]] == content.shas
                    and _strings(f["paths"][()]) == content.paths
                    and [tuple(_strings(r)) for r in f["quarantine"][()]] == list(content.quarantine))
            if not same:
                return False
            digest = hashlib.sha256()
            ds = f["features"]
            step = max(1, ds.chunks[0] if ds.chunks else len(ds))
            for start in range(0, ds.shape[0], step):
                digest.update(np.ascontiguousarray(ds[start:start + step]).tobytes())
            return digest.hexdigest() == attrs["features_sha256"]
    except (FeatureFileError, OSError, KeyError, ValueError, TypeError, RuntimeError):
        return False


def _strings(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
