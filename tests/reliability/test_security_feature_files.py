"""Every byte of a feature file is covered, and nothing outside it is ever read as features.

Two families. Damage: a flipped bit anywhere in the bytes of any dataset (features,
labels, paths, image hashes, quarantine) or of the attributes is refused; the fuzz
test aims at each dataset's own byte range, found from the file's layout. Forgery:
each hostile file below is re-signed (both checksums recomputed, as an attacker
would), so only the structural checks stand between it and a model: links and
external storage, virtual datasets reaching elsewhere, declared sizes the file does
not hold, foreign dtypes, filters, NaN/infinity, labels outside the classes.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bneck.features import FeatureFileError, extract, read_features
from bneck.features.featurefile.format import RowReader
from bneck.features.featurefile.validate import content_digest, decode_attrs
from tests.generated import make_images

pytestmark = pytest.mark.pure

EXAMPLES = int(os.environ.get("BNECK_FUZZ_EXAMPLES", 25))


@pytest.fixture(scope="module")
def split_file(tmp_path_factory, tiny):
    """A real train.h5 with a quarantined file, so every dataset holds bytes."""
    root = tmp_path_factory.mktemp("ffiles")
    data = make_images(root / "data", 3, splits=("train",))
    (data / "train" / "cats" / "empty.jpg").write_bytes(b"")
    extract(data, root / "out", cache_dir=root / "cache", verbose=False, **tiny)
    path = root / "out" / "train.h5"
    assert len(read_features(str(path)).quarantine) == 1
    return path


def resign(path) -> None:
    """Recompute both checksums over what the file now holds: the forger's last step."""
    with h5py.File(path, "r+") as f:
        ds = f["features"]
        f.attrs["features_sha256"] = hashlib.sha256(np.ascontiguousarray(ds[()]).tobytes()).hexdigest()
        f.attrs["content_sha256"] = content_digest(f, decode_attrs(f))


def _copy(split_file, tmp_path):
    target = tmp_path / "train.h5"
    shutil.copy(split_file, target)
    return target


def _replace_features(f, **create):
    n_shape = f["features"].shape
    del f["features"]
    return f.create_dataset("features", **{"shape": n_shape, **create})


def labels_outside_the_classes(f, tmp_path):
    f["labels"][0] = 7


def nan_features(f, tmp_path):
    f["features"][0, 0, 0, 0] = np.nan


def infinite_features(f, tmp_path):
    f["features"][1, 0, 0, 0] = -np.inf


def declared_rows_not_stored(f, tmp_path):
    shape = f["features"].shape
    _replace_features(f, dtype="float32", chunks=(1,) + shape[1:])  # no chunk written: fill values


def object_dtype_features(f, tmp_path):
    n = f["features"].shape[0]
    del f["features"]
    f.create_dataset("features", data=np.array([b"x"] * n, dtype=object), dtype=h5py.string_dtype())


def float64_features(f, tmp_path):
    data = f["features"][()]
    del f["features"]
    f.create_dataset("features", data=data.astype(np.float64))


def lzf_compressed_features(f, tmp_path):  # a filter bneck never writes (any other would be a plugin: code)
    data = f["features"][()]
    del f["features"]
    f.create_dataset("features", data=data, compression="lzf")


def a_deflate_bomb(f, tmp_path):  # 16 MB of zeros a row, stored in a few kilobytes
    n = f["features"].shape[0]
    del f["features"]
    ds = f.create_dataset(
        "features", shape=(n, 256, 256, 64), dtype="float32", chunks=(1, 256, 256, 64), compression="gzip"
    )
    for i in range(n):
        ds[i] = np.zeros((256, 256, 64), np.float32)


def a_stream_that_inflates_past_its_chunk(f, tmp_path):  # libhdf5 inflates a stream whole: 64 MB here
    import zlib

    data = f["features"][()]
    del f["features"]
    ds = f.create_dataset("features", shape=data.shape, dtype=data.dtype, chunks=data.shape, compression="gzip")
    ds.id.write_direct_chunk((0,) * data.ndim, zlib.compress(data.tobytes() + b"\0" * (64 << 20), 9))


def features_deflated_twice(f, tmp_path):  # a pipeline bneck never writes (two deflates bomb better)
    data = f["features"][()]
    del f["features"]
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk(data.shape)
    plist.set_deflate(1)
    plist.set_deflate(1)
    space = h5py.h5s.create_simple(data.shape)
    h5py.h5d.create(f.id, b"features", h5py.h5t.IEEE_F32LE, space, plist).write(h5py.h5s.ALL, h5py.h5s.ALL, data)


def an_unwritten_quarantine_of_millions(f, tmp_path):  # 2 million text cells, none stored: a few KB
    del f["quarantine"]
    f.create_dataset("quarantine", shape=(2_000_000, 2), dtype=h5py.string_dtype("utf-8"), chunks=(1000, 2))


def features_in_oversized_chunks(f, tmp_path):  # all rows in one chunk of 16 MB each: 80+ MB to read any row
    n = f["features"].shape[0]
    assert n >= 5
    del f["features"]
    ds = f.create_dataset("features", shape=(n, 512, 512, 16), dtype="float32", chunks=(n, 512, 512, 16))
    ds[...] = 0.5


def features_as_a_soft_link(f, tmp_path):
    f["stolen"] = f["features"][()]
    del f["features"]
    f["features"] = h5py.SoftLink("/stolen")


def features_as_an_external_link(f, tmp_path):
    other = tmp_path / "elsewhere.h5"
    with h5py.File(other, "w") as g:
        g["features"] = f["features"][()]
    del f["features"]
    f["features"] = h5py.ExternalLink(str(other), "/features")


def features_in_external_raw_storage(f, tmp_path):
    shape, data = f["features"].shape, f["features"][()]
    secret = tmp_path / "secret.raw"
    secret.write_bytes(data.astype(np.float32).tobytes())  # the right bytes, stored outside the file
    del f["features"]
    f.create_dataset("features", shape=shape, dtype="float32", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])


def _virtual(f, tmp_path, source_name, dataset="features", folder="train.shards"):
    data = f["features"][()]
    (tmp_path / folder).mkdir(exist_ok=True)
    with h5py.File(tmp_path / folder / "00000-0123456789abcdef.h5", "w") as g:
        g["features"] = data
        g["labels"] = data
        g.attrs["complete"] = True
    del f["features"]
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    layout[:] = h5py.VirtualSource(source_name, dataset, shape=data.shape)
    f.create_virtual_dataset("features", layout)


def virtual_features_from_an_absolute_path(f, tmp_path):
    _virtual(f, tmp_path, str(tmp_path / "train.shards" / "00000-0123456789abcdef.h5"))


def virtual_features_from_another_folder(f, tmp_path):
    _virtual(f, tmp_path, "elsewhere/00000-0123456789abcdef.h5", folder="elsewhere")


def virtual_features_from_another_dataset(f, tmp_path):
    _virtual(f, tmp_path, "train.shards/00000-0123456789abcdef.h5", dataset="labels")


def a_split_name_that_leaves_the_folder(f, tmp_path):
    _virtual(f, tmp_path, "../x.shards/00000-0123456789abcdef.h5", folder="../x.shards")
    f.attrs["split"] = "../x"


def an_extra_dataset_smuggled_in(f, tmp_path):
    f.create_dataset("smuggled", data=np.frombuffer(b"SECRET PAYLOAD " * 100, "u1"))


def an_extra_group(f, tmp_path):
    f.create_group("hidden").create_dataset("x", data=np.arange(10))


def an_attribute_on_a_dataset(f, tmp_path):
    f["features"].attrs["note"] = "attacker controlled"


def an_attribute_bneck_never_writes(f, tmp_path):
    f.attrs["note"] = "attacker controlled"


FORGERIES = [
    an_extra_dataset_smuggled_in,
    an_extra_group,
    an_attribute_on_a_dataset,
    an_attribute_bneck_never_writes,
    labels_outside_the_classes,
    nan_features,
    infinite_features,
    declared_rows_not_stored,
    object_dtype_features,
    float64_features,
    lzf_compressed_features,
    a_deflate_bomb,
    a_stream_that_inflates_past_its_chunk,
    features_deflated_twice,
    an_unwritten_quarantine_of_millions,
    features_in_oversized_chunks,
    features_as_a_soft_link,
    features_as_an_external_link,
    features_in_external_raw_storage,
    virtual_features_from_an_absolute_path,
    virtual_features_from_another_folder,
    virtual_features_from_another_dataset,
    a_split_name_that_leaves_the_folder,
]


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__)
def test_a_re_signed_forgery_is_refused_in_one_paragraph(split_file, tmp_path, forge):
    path = _copy(split_file, tmp_path)
    with h5py.File(path, "r+") as f:
        forge(f, tmp_path)
    try:
        resign(path)
    except (OSError, TypeError, ValueError, KeyError, RuntimeError):
        pass  # some forgeries cannot even be hashed whole; they must still be refused
    with pytest.raises(FeatureFileError) as err:
        read_features(str(path))
    message = str(err.value)
    assert str(path) in message and "bneck extract" in message and "\n" not in message


def _data_ranges(path) -> dict:
    """Return {what: [(offset, length)]}: where each dataset's values and the attributes sit in the file."""
    raw = path.read_bytes()
    ranges = {}
    with h5py.File(path, "r") as f:
        ds = f["features"]
        ranges["features"] = [ds.id.get_chunk_info(i)[2:4] for i in range(ds.id.get_num_chunks())]
        for name in ("labels", "sha256"):
            ranges[name] = [(f[name].id.get_offset(), f[name].id.get_storage_size())]
        paths = [p.decode() if isinstance(p, bytes) else p for p in f["paths"][()]]
        reason = f["quarantine"][0, 1]
        reason = reason.decode() if isinstance(reason, bytes) else reason
    for name, texts in (("paths", paths), ("quarantine", [reason]), ("attributes", ['"cats", "dogs"'])):
        ranges[name] = [(raw.index(t.encode()), len(t.encode())) for t in texts if raw.count(t.encode()) == 1]
        assert ranges[name], name  # each found exactly once in the file
    return ranges


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    what=st.sampled_from(["features", "labels", "paths", "sha256", "quarantine", "attributes"]),
    where=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
)
def test_a_flipped_bit_in_any_dataset_or_attribute_is_refused(split_file, tmp_path_factory, what, where, bit):
    ranges = _data_ranges(split_file)[what]
    total = sum(length for _, length in ranges)
    k = int(where * total)
    for offset, length in ranges:  # noqa: B007 - offset is read after the loop: the k-th byte's range
        if k < length:
            break
        k -= length
    path = tmp_path_factory.mktemp("flip") / "train.h5"
    raw = bytearray(split_file.read_bytes())
    raw[offset + k] ^= 1 << bit
    path.write_bytes(bytes(raw))
    with pytest.raises(FeatureFileError):
        read_features(str(path))


def test_a_flipped_bit_in_the_labels_is_refused(split_file, tmp_path):
    path = _copy(split_file, tmp_path)
    with h5py.File(path, "r+") as f:
        f["labels"][0] ^= 1  # cat becomes dog: same shape, same dtype, checksum untouched
    with pytest.raises(FeatureFileError, match="content checksum"):
        read_features(str(path))


def test_streaming_reads_check_every_block(split_file, tmp_path):
    path = _copy(split_file, tmp_path)
    reader = RowReader(str(path), rows=2)
    full = read_features(str(path)).features
    np.testing.assert_array_equal(np.concatenate([b for _, b in reader.blocks()]), full)
    with h5py.File(path, "r+") as f:  # changed after it was opened and checked
        f["features"][3, 0, 0, 0] += 1
    with pytest.raises(FeatureFileError, match="changed while it was being read"):
        list(reader.blocks([1]))  # rows 2-3
    with pytest.raises(FeatureFileError, match="checksum"):
        RowReader(str(path), rows=2)  # and a fresh pass refuses it whole


def test_out_of_core_training_refuses_a_damaged_file(split_file, tmp_path):
    from bneck.pipeline import train

    features = tmp_path / "features"
    features.mkdir()
    for split in ("train", "validation"):
        shutil.copy(split_file, features / f"{split}.h5")
    with h5py.File(features / "validation.h5", "r+") as f:
        f.attrs["split"] = "validation"
        held_out = [hashlib.sha256(sha).hexdigest().encode() for sha in f["sha256"][()]]
        f["sha256"][...] = np.array(held_out, dtype="S64")  # other images: train refuses splits it trained on
    resign(features / "validation.h5")
    with h5py.File(features / "train.h5", "r+") as f:
        f["features"][0, 0, 0, 0] += 1
    with pytest.raises(FeatureFileError, match="checksum"):
        train(features, ["logreg"], tmp_path / "m", max_memory=1, verbose=False)


def test_rerunning_extract_replaces_a_re_signed_forgery_with_the_cache_rows(tmp_path, tiny):
    data = make_images(tmp_path / "data", 2, splits=("train",))
    extract(data, tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **tiny)
    path = tmp_path / "out" / "train.h5"
    good = read_features(str(path)).features
    with h5py.File(path, "r+") as f:
        f["features"][0] = f["features"][0] * 0.5  # plausible, wrong, and re-signed below
    resign(path)
    assert read_features(str(path)).features[0].sum() != good[0].sum()  # a valid-looking file
    report = extract(data, tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **tiny)
    assert report.forward_images == 0 and not report.splits[0].file_unchanged
    np.testing.assert_array_equal(read_features(str(path)).features, good)


def test_a_user_block_in_front_of_a_feature_file_is_refused(split_file, tmp_path):
    """A user block makes the file also a shell script; no checksum covers it."""
    path = tmp_path / "train.h5"
    with h5py.File(split_file, "r") as src, h5py.File(path, "w", userblock_size=4096) as dst:
        for name in src:
            src.copy(name, dst)
        for name, value in src.attrs.items():
            dst.attrs[name] = value
    with open(path, "r+b") as handle:
        handle.write(b"#!/bin/sh\necho this feature file is also a shell script\n")
    with pytest.raises(FeatureFileError, match="user block"):
        read_features(str(path))
