"""Damaged cache chunks and feature files: detected on read, reported, rebuilt; never silently wrong.

``tests/features/featurefile/test_format.py`` covers split files damaged through h5py (edited
values and attributes, dropped rows, truncation, a missing file). Here: the shared
cache's chunks, and raw byte flips anywhere in a file, as a disk would make them.
"""

from __future__ import annotations

import os
import shutil
import warnings

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bneck.core.errors import BneckWarning, FeatureFileError
from bneck.features import extract, read_features
from bneck.features.cache.maintenance import collect_garbage
from bneck.features.cache.verify import verify_cache
from tests.conftest import MOBILENET, copy_subset

# Re-signed forgeries too (a writer of the cache can compute checksums): hashes that are not text,
# fewer rows than hashes, float64 rows, and a compressed chunk whose stream inflates past its
# declared size (libhdf5 would inflate it whole: a decompression bomb under a valid checksum).
FORGED = ["sha256_as_integers", "fewer_rows_than_hashes", "float64_rows", "inflating_features"]
DAMAGES = ["truncated", "flipped_feature_byte", "flipped_hash_byte", "no_complete_flag", "old_schema_version", *FORGED]
FAIL_ON_READ = ("flipped_feature_byte", "inflating_features")  # the hashes still list the rows


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0xFF]))


def _damage(chunk: str, damage: str) -> None:
    if damage == "truncated":
        with open(chunk, "r+b") as handle:
            handle.truncate(os.path.getsize(chunk) // 2)
    elif damage in ("flipped_feature_byte", "flipped_hash_byte"):
        with h5py.File(chunk, "r") as f:  # where the raw bytes of the dataset lie in the file
            ds = f["features" if damage == "flipped_feature_byte" else "sha256"]
            if ds.chunks:  # compressed rows: a byte inside the first chunk's stored bytes
                offset, size = ds.id.get_chunk_info(0)[2:4]
                offset += size // 3
            else:
                offset = ds.id.get_offset() + ds.id.get_storage_size() // 3
        _flip(chunk, offset)
    elif damage in FORGED:
        _forge(chunk, damage)
    else:
        with h5py.File(chunk, "r+") as f:
            if damage == "no_complete_flag":
                del f.attrs["complete"]
            else:
                f.attrs["schema_version"] = 0


def _forge(chunk: str, damage: str) -> None:
    import zlib

    from bneck.core.hashing import sha256_array

    with h5py.File(chunk, "r+") as f:
        shas, feats = f["sha256"][()], f["features"][()]
        if damage == "sha256_as_integers":
            del f["sha256"]
            f["sha256"] = np.arange(len(shas))
            f.attrs["sha256_sha256"] = sha256_array(f["sha256"][()])
            return
        del f["features"]
        if damage == "inflating_features":
            ds = f.create_dataset(
                "features", shape=feats.shape, dtype=feats.dtype, chunks=feats.shape, compression="gzip"
            )
            ds.id.write_direct_chunk((0,) * feats.ndim, zlib.compress(feats.tobytes() + b"\0" * (1 << 22)))
        else:
            f["features"] = feats[:-1] if damage == "fewer_rows_than_hashes" else feats.astype(np.float64)
        f.attrs["features_sha256"] = sha256_array(feats if damage == "inflating_features" else f["features"][()])


@pytest.fixture
def cached(tmp_path):
    """Six real images extracted once: (data, cache, the one chunk, the original features)."""
    data = copy_subset(tmp_path / "data", 3, splits=("train",))
    extract(data, tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
    chunks = list((tmp_path / "cache").glob("features/*/rows-*.h5"))
    assert len(chunks) == 1
    return data, tmp_path / "cache", str(chunks[0]), read_features(str(tmp_path / "out" / "train.h5")).features


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_cache_chunk_is_detected_reported_and_rebuilt(cached, tmp_path, capsys, damage):
    data, cache, chunk, good = cached
    _damage(chunk, damage)
    checked, problems = verify_cache(str(cache))
    assert checked == 1 and [p for p, _ in problems] == [chunk]
    if damage in FAIL_ON_READ:  # the hashes still list the rows: reading them must fail
        with pytest.raises(FeatureFileError, match="damaged.*bneck cache gc"):
            extract(data, tmp_path / "again", cache_dir=cache, verbose=False, **MOBILENET)
        assert collect_garbage(str(cache))["bad_chunks"] == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = extract(data, tmp_path / "again", cache_dir=cache, verbose=False, **MOBILENET)
    said = [str(w.message) for w in caught if issubclass(w.category, BneckWarning)]
    if damage not in FAIL_ON_READ:  # ignored on sight, with a warning naming it (even when quiet)
        assert any(f"ignoring damaged cache chunk {chunk}" in text for text in said), said
    assert "ignoring damaged" not in capsys.readouterr().err  # the library never prints: the CLI shows warnings
    assert report.forward_images == 6  # rebuilt, and equal to what it was
    np.testing.assert_array_equal(read_features(str(tmp_path / "again" / "train.h5")).features, good)
    collect_garbage(str(cache))
    assert verify_cache(str(cache))[1] == []


@pytest.fixture(scope="module")
def split_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("split-file")
    extract(
        copy_subset(root / "data", 2, splits=("test",)),
        root / "out",
        cache_dir=root / "cache",
        verbose=False,
        **MOBILENET,
    )
    path = root / "out" / "test.h5"
    return path, read_features(str(path))


@settings(
    max_examples=int(os.environ.get("BNECK_FUZZ_EXAMPLES", 60)),  # e.g. 1500 for a deep run deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    # The same 60 places every run (BNECK_FUZZ_RANDOM=1 explores): a random run once hit a byte in the
    # attribute heap that crashes libhdf5 itself (a segfault in h5py's attrs reader, 2026-12-06) - a
    # known open defect (issue 27: untrusted HDF5 metadata is parsed in-process), not a chance failure.
    derandomize=not os.environ.get("BNECK_FUZZ_RANDOM"),
)
@given(where=st.floats(0, 1, exclude_max=True))
def test_a_flipped_byte_anywhere_in_a_feature_file_is_refused_or_harmless(split_file, tmp_path, where):
    path, good = split_file
    copy = tmp_path / "flipped.h5"
    shutil.copy(path, copy)
    _flip(str(copy), int(where * os.path.getsize(copy)))
    try:
        read = read_features(str(copy))
    except FeatureFileError as exc:
        assert str(copy) in str(exc)
        return
    # Read without complaint: then every value must be exactly the original's.
    np.testing.assert_array_equal(read.features, good.features)
    assert read.paths == good.paths and list(read.labels) == list(good.labels)
    assert read.sha256 == good.sha256 and read.attrs["class_names"] == good.attrs["class_names"]
