"""Checking a split file before any of it is used: every byte covered, nothing reached outside it.

A split file is trusted only if:

* it says it is complete, in this bneck's file format and schema version;
* it holds exactly bneck's datasets with bneck's dtypes and shapes, stored as
  ``storage`` writes them: deflate and shuffle the only filters, an uncompressed dataset
  stored in full (declaring more rows than the file holds is refused, not read as fill
  values), a compressed one declaring at most ``MAX_INFLATION`` times what it stores;
* it reaches nothing outside itself: no soft or external link, no external raw
  storage, and a virtual ``features`` dataset only over complete shard files in its
  own ``<split>.shards/`` folder (the Ray engine's), each reading their ``features``;
* its attributes still hash to its ``extractor_key``, and ``content_sha256`` (labels,
  paths, image hashes, quarantine and every attribute) matches; the features bytes
  are checked against ``features_sha256`` by whoever reads them (``store``);
* its labels name its classes.
"""

from __future__ import annotations

import json
import os
import stat

import h5py
import numpy as np

from bneck.core.errors import FeatureFileError
from bneck.core.folders import folder_kind
from bneck.core.hashing import sha256_json
from bneck.features.backbones.resolve import check_record
from bneck.features.backbones.spec import KEY_FIELDS, OPTIONAL_KEY_FIELDS, SCHEMA_VERSION, extractor_key
from bneck.features.featurefile.reach import H5Refused, check_self_contained
from bneck.features.featurefile.storage import nonfinite_rows, storage_problem

FILE_FORMAT = 2  # bumped when the file layout or its checksums change (not the rows: see SCHEMA_VERSION)
REQUIRED_DATASETS = ("features", "labels", "paths", "sha256", "quarantine")
FEATURE_DTYPES = ("float32", "float16")
# Attributes stored as JSON text (lists, dicts, and the full extractor spec, whose
# ``alpha`` may be None, which HDF5 attributes cannot hold).
JSON_ATTRS = (
    "class_names",
    "split_spec",
    "excluded_classes",
    "extractor",
    "quantization_check",
    "shards",
    "cross_split_duplicates",
    "equivalence",
)
_NOT_IN_CONTENT = ("content_sha256", "complete")
# Every attribute a split file may hold (``Extractor.split_attrs`` and ``store._write_rest``); a
# file with any other is not bneck's.
KNOWN_ATTRS = frozenset(KEY_FIELDS) | {
    "weights",
    "extractor",
    "extractor_key",
    "weights_path",
    "class_names",
    "data_root",
    "layout",
    "split_spec",
    "excluded_classes",
    "runtime",
    "precision",
    "engine",
    "follow_links",
    "quantization_check",
    "equivalence",
    "cross_split_duplicates",
    "shards",
    "split",
    "n_images",
    "features_sha256",
    "file_format",
    "created_utc",
    "python",
    "bneck_version",
    "tensorflow_version",
    "keras_version",
    "h5py_version",
    "numpy_version",
    "pillow_version",
    "content_sha256",
    "complete",
}


SPLIT_FILES = ("train.h5", "validation.h5", "test.h5")


def rebuild_hint(path: str) -> str:
    """The advice for a damaged feature file: delete and rebuild it only when bneck made it where it is
    (a split file in a folder `bneck extract` marked); never a user's photo, model or config."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path) in SPLIT_FILES and folder_kind(folder) == "features":
        return f"Delete {path} and run `bneck extract` again to rebuild it (cached rows are reused, so this is quick)."
    return (
        "It is not a file `bneck extract` wrote where it is (feature files are the train.h5, validation.h5 and "
        "test.h5 of a folder it made), so it is left as it is: give the feature file or features folder bneck wrote."
    )


def decode_attrs(f: h5py.File) -> dict:
    """Return a split file's attributes as Python values (JSON attributes parsed)."""
    out = {}
    for name, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, np.generic):
            value = value.item()
        if name in JSON_ATTRS and isinstance(value, str):
            value = json.loads(value)
        out[name] = value
    return out


def strings(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def content_digest(f: h5py.File, attrs: dict) -> str:
    """Return the sha256 of everything in a split file but the features bytes (and the flags)."""
    return sha256_json(
        {
            "labels": f["labels"][()].tolist(),
            "paths": strings(f["paths"][()]),
            "sha256": strings(f["sha256"][()]),
            "quarantine": [strings(row) for row in f["quarantine"][()]],
            "attrs": {k: v for k, v in attrs.items() if k not in _NOT_IN_CONTENT},
        }
    )


def _refuse(path: str, problem: str) -> FeatureFileError:
    return FeatureFileError(
        f"{path} {problem}. It was not written by this bneck or has been altered; {rebuild_hint(path)}"
    )


def _check_datasets(path: str, f: h5py.File) -> int:
    """Check that the file holds exactly bneck's datasets: names, dtypes, shapes, no attributes of
    their own, stored as ``storage`` allows (deflate and shuffle only, every byte or a bounded
    inflation); returns the row count."""
    missing = [d for d in REQUIRED_DATASETS if not isinstance(f.get(d), h5py.Dataset)]
    if missing:
        raise _refuse(path, f"lacks the dataset(s) {', '.join(missing)}")
    extra = sorted(set(f) - set(REQUIRED_DATASETS))
    if extra:
        raise _refuse(path, f"holds {', '.join(extra[:5])} besides bneck's datasets")
    if f.userblock_size:
        raise _refuse(path, f"starts with a {f.userblock_size}-byte user block that no checksum covers")
    with_attrs = [d for d in REQUIRED_DATASETS if len(f[d].attrs)]
    if with_attrs:
        raise _refuse(path, f"has attributes on its dataset(s) {', '.join(with_attrs)}, which bneck never writes")
    feats, labels, paths, shas, quarantine = (f[d] for d in REQUIRED_DATASETS)
    n = feats.shape[0] if feats.ndim else -1
    wanted = [
        (feats.dtype.name in FEATURE_DTYPES and feats.ndim >= 2, "features: float32/float16, (N, ...)"),
        (labels.dtype == np.int64 and labels.shape == (n,), "labels: int64, (N,)"),
        (h5py.check_string_dtype(paths.dtype) is not None and paths.shape == (n,), "paths: UTF-8 text, (N,)"),
        (shas.dtype == np.dtype("S64") and shas.shape == (n,), "sha256: 64-byte text, (N,)"),
        (
            h5py.check_string_dtype(quarantine.dtype) is not None and quarantine.ndim == 2 and quarantine.shape[1] == 2,
            "quarantine: UTF-8 text, (K, 2)",
        ),
    ]
    for ok, what in wanted:
        if not ok:
            raise _refuse(
                path,
                f"does not hold bneck's datasets (expected {what}; found features "
                f"{feats.dtype}{feats.shape}, labels {labels.dtype}{labels.shape}, "
                f"paths {paths.dtype}{paths.shape}, sha256 {shas.dtype}{shas.shape}, "
                f"quarantine {quarantine.dtype}{quarantine.shape})",
            )
    for ds in (feats, labels, paths, shas, quarantine):
        problem = None if ds.is_virtual else storage_problem(ds)
        if problem:
            raise _refuse(path, problem)
    return n


def _shard_checker(path: str, split: str):
    """Return the ``allow_virtual`` for a split file: shard files in ``<split>.shards/`` only."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    shards = os.path.join(folder, f"{split}.shards")

    def allow(name: str, ds: h5py.Dataset) -> None:
        if name != "/features":
            raise H5Refused(f"holds a virtual dataset {name}; only features may be one")
        for source in ds.virtual_sources():
            target = os.path.realpath(os.path.join(folder, source.file_name))
            if os.path.isabs(source.file_name) or os.path.dirname(target) != shards:
                raise H5Refused(f"reads its features from {source.file_name}, outside its own {split}.shards/ folder")
            if source.dset_name != "features":
                raise H5Refused(
                    f"reads its features from the dataset {source.dset_name!r} of "
                    f"{source.file_name}, not from its features"
                )
            _check_shard(path, os.path.join(folder, source.file_name), source)

    return allow


def _check_shard(path: str, shard: str, source) -> None:
    """Refuse a missing, linked, incomplete or truncated shard (HDF5 would read fill values)."""
    problem = None
    st = os.lstat(shard) if os.path.lexists(shard) else None
    if st is None:
        problem = "is missing"
    elif not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file (a link or something else)"
    else:
        try:
            with h5py.File(shard, "r") as f:
                check_self_contained(f)
                low, high = source.vspace.get_select_bounds()
                expected = tuple(h - lo + 1 for lo, h in zip(low, high))
                ds = f.get("features")
                if not f.attrs.get("complete", False):
                    problem = "is incomplete (no 'complete' flag)"
                elif not isinstance(ds, h5py.Dataset) or ds.shape != expected:
                    problem = f"holds features of shape {getattr(ds, 'shape', None)}, not {expected}"
                else:
                    problem = storage_problem(ds)
        except H5Refused as exc:
            problem = str(exc)
        except (OSError, KeyError, RuntimeError, ValueError):
            problem = "cannot be read (truncated or damaged)"
    if problem:
        raise FeatureFileError(
            f"{path} reads its features from the shard file {shard}, which {problem}. Rerun the "
            f"same `bneck extract --engine ray` command: finished shards are kept and only the "
            f"missing ones are computed."
        )


def validate(path: str, f: h5py.File) -> dict:
    """Check a split file's structure, links, attributes and content checksum; returns its attributes.

    Raises FeatureFileError naming the file, the problem and how to rebuild it.
    """
    attrs = decode_attrs(f)
    _check_flags(path, attrs)
    try:
        check_self_contained(f, _shard_checker(path, attrs["split"]))
    except H5Refused as exc:
        raise _refuse(path, str(exc)) from None
    n = _check_datasets(path, f)
    _check_attributes(path, attrs, n)
    if content_digest(f, attrs) != attrs["content_sha256"]:
        raise _refuse(
            path,
            "does not match its content checksum (labels, paths, image hashes, quarantine or attributes were changed)",
        )
    _check_paths(path, f)
    _check_classes(path, f, attrs, n)
    return attrs


def _check_flags(path: str, attrs: dict) -> None:
    """Refuse a file not written to the end, of another schema or file format, or naming no known split."""
    if not attrs.get("complete", False):
        raise FeatureFileError(
            f"{path} is incomplete (no 'complete' flag): it was not written to the end. {rebuild_hint(path)}"
        )
    if attrs.get("schema_version") != SCHEMA_VERSION or attrs.get("file_format") != FILE_FORMAT:
        raise FeatureFileError(
            f"{path} has schema_version={attrs.get('schema_version')!r} and file_format="
            f"{attrs.get('file_format')!r}, but this bneck reads schema_version={SCHEMA_VERSION}, "
            f"file_format={FILE_FORMAT}. {rebuild_hint(path)}"
        )
    if attrs.get("split") not in ("train", "validation", "test"):
        raise _refuse(path, f"names the split {attrs.get('split')!r}")


def _check_attributes(path: str, attrs: dict, n: int) -> None:
    """Refuse missing or unknown attributes, a wrong ``n_images``, and an extractor record that does not
    hash to ``extractor_key``, disagrees with the file's own attributes or holds a field bneck never writes."""
    missing = [
        a for a in ("extractor", "extractor_key", "class_names", "features_sha256", "content_sha256") if a not in attrs
    ]
    if missing:
        raise _refuse(path, f"lacks the attribute(s) {', '.join(missing)}")
    unknown = sorted(set(attrs) - KNOWN_ATTRS)
    if unknown:
        raise _refuse(path, f"has attribute(s) bneck never writes: {', '.join(unknown[:5])}")
    if attrs.get("n_images") != n:
        raise _refuse(path, f"has {n} rows but says n_images={attrs.get('n_images')!r}")
    spec = attrs["extractor"]
    if (
        not isinstance(spec, dict)
        or any(k not in spec for k in KEY_FIELDS if k not in OPTIONAL_KEY_FIELDS)
        or extractor_key(spec) != attrs["extractor_key"]
        or any(attrs.get(k, spec.get(k)) != spec.get(k) for k in KEY_FIELDS if spec.get(k) is not None)
    ):
        raise _refuse(path, "has attributes that do not match its extractor_key")
    check_record(spec, path)


def _check_paths(path: str, f: h5py.File) -> None:
    """Refuse an image path that is absolute, empty or climbs out of the data folder."""
    bad_path = next((p for p in strings(f["paths"][()]) if os.path.isabs(p) or ".." in p.split("/") or not p), None)
    if bad_path is not None:
        raise _refuse(
            path,
            f"records the image path {bad_path[:120]!r}, which is not a path inside the data "
            "folder (absolute, empty, or climbing out with '..')",
        )


def _check_classes(path: str, f: h5py.File, attrs: dict, n: int) -> None:
    """Refuse class names that are not a list of distinct names, and labels outside them."""
    names = attrs["class_names"]
    labels = f["labels"][()]
    if not isinstance(names, list) or not names or not all(isinstance(c, str) and c for c in names):
        raise _refuse(path, "has class names that are not a list of names")
    if len(set(names)) != len(names) or (n and (labels.min() < 0 or labels.max() >= len(names))):
        raise _refuse(path, f"has labels outside its {len(names)} classes")


def check_finite(path: str, rows: np.ndarray, first_row: int = 0) -> None:
    """Refuse features holding NaN or infinity (a network that diverged, or an edited file)."""
    bad = nonfinite_rows(rows)
    if len(bad):
        raise FeatureFileError(
            f"{path}: {len(bad)} feature row(s) hold NaN or infinity (first: row "
            f"{first_row + int(bad[0])}); a classifier trained on them would "
            f"be meaningless. {rebuild_hint(path)}"
        )
