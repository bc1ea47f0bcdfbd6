"""Hostile image folders: every bad file is quarantined with a reason, and the good ones go through.

Property-based (hypothesis): each example is a real folder of good JPEGs plus a
random mix of truncated JPEGs and PNGs, random bytes under image extensions,
headers declaring huge dimensions, self-referencing symlinks and non-UTF-8 names.
BNECK_FUZZ_EXAMPLES sets the example count (default 25; 200 takes about 3.5 minutes here).
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bneck.core.errors import DatasetError
from bneck.features import extract
from tests.conftest import DATA, MOBILENET, copy_subset
from tests.reliability.conftest import MOBILENET_ARGS

EXAMPLES = int(os.environ.get("BNECK_FUZZ_EXAMPLES", 25))
EXAMPLE_NUMBERS = itertools.count()


def _jpeg() -> bytes:
    """A real photo (a synthetic one without ../shared, where these tests are skipped anyway)."""
    real = DATA / "train" / "cats" / "cat.0.jpg"
    if real.is_file():
        return real.read_bytes()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()
EXTENSIONS = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".JPG"]


def _png(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring ``width`` x ``height`` pixels, with a few bytes of pixels."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _real_png() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(JPEG)).resize((64, 48)).save(out, "PNG")
    return out.getvalue()


PNG = _real_png()

hostile = st.one_of(
    st.tuples(st.just("truncated-jpeg"), st.integers(0, len(JPEG) - 3).map(lambda n: JPEG[:n])),
    st.tuples(st.just("truncated-png"), st.integers(0, len(PNG) - 13).map(lambda n: PNG[:n])),
    st.tuples(st.just("random-bytes"), st.binary(min_size=0, max_size=2048)),
    st.tuples(
        st.just("huge-dimensions"),
        st.tuples(st.integers(10_000, 2**31 - 1), st.integers(10_000, 2**31 - 1)).map(lambda wh: _png(*wh)),
    ),
    st.tuples(st.just("symlink-loop"), st.just(None)),
    st.tuples(st.just("non-utf8-name"), st.just(JPEG)),
)


def _plant(folder: Path, index: int, kind: str, content, extension: str) -> str:
    """Write one hostile file into ``folder``; returns its name as bneck reports it (relative, str)."""
    if kind == "symlink-loop":
        name = f"loop{index}{extension}"
        os.symlink(name, folder / name)
    elif kind == "non-utf8-name":
        raw = os.fsencode(folder) + b"/bad\xff" + str(index).encode() + b".jpg"
        with open(raw, "wb") as handle:
            handle.write(content)
        # bneck reports such a name escaped, so that it can be printed and stored
        name = os.fsdecode(raw).rsplit("/", 1)[1].encode("utf-8", "backslashreplace").decode()
    else:
        name = f"hostile{index}{extension}"
        (folder / name).write_bytes(content)
    return name


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Good images, and a cache that holds their rows after the first example."""
    root = tmp_path_factory.mktemp("hostile")
    good = copy_subset(root / "good", 2, splits=("train",))
    extract(good, root / "out", cache_dir=root / "cache", verbose=False, **MOBILENET)
    return good, root / "cache"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.tuples(hostile, st.sampled_from(EXTENSIONS), st.sampled_from(["cats", "dogs"])), min_size=1, max_size=6
    )
)
def test_hostile_files_are_quarantined_and_good_images_go_through(shared, files):
    good, cache = shared
    work = good.parent / f"example-{next(EXAMPLE_NUMBERS)}"  # not tempfile: it draws from `random`
    work.mkdir()
    try:
        data = work / "data"
        shutil.copytree(good, data)
        planted = {}
        for i, ((kind, content), ext, cls) in enumerate(files):
            name = _plant(data / "train" / cls, i, kind, content, ext)
            planted[f"train/{cls}/{name}"] = kind
        report = extract(data, work / "out", cache_dir=cache, verbose=False, **MOBILENET)
        split = report.splits[0]
        quarantined = dict(split.quarantine)
        assert split.images + split.quarantined == 4 + len(planted)  # nothing silently dropped
        for path, kind in planted.items():
            if kind == "huge-dimensions":
                assert "decompression bomb" in quarantined[path]
        # good rows: cached (a kept hostile image may be too, when an earlier example had its bytes)
        assert split.images >= 4 and split.reused >= 4 and report.forward_images <= split.images - 4
        for path, kind in planted.items():
            if path in quarantined:
                assert quarantined[path].strip(), (path, kind)
            else:  # kept: only if it really is a decodable image
                assert kind in ("truncated-jpeg", "truncated-png", "random-bytes"), (path, kind)
                assert _decodes(data / path), (path, kind)
    finally:
        shutil.rmtree(work)


def test_each_kind_gets_a_reason_a_person_understands(tmp_path):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    cats = data / "train" / "cats"
    (cats / "empty.jpg").write_bytes(b"")
    (cats / "cut.jpg").write_bytes(JPEG[:2000])
    (cats / "bomb.png").write_bytes(_png(100_000, 100_000))
    os.symlink("loop.jpg", cats / "loop.jpg")
    with open(os.fsencode(cats) + b"/caf\xe9.jpg", "wb") as handle:
        handle.write(JPEG)
    report = extract(data, tmp_path / "out", verbose=False, **MOBILENET)
    reasons = dict(report.splits[0].quarantine)
    assert report.splits[0].images == 4
    assert "empty" in reasons["train/cats/empty.jpg"] or "not a recognised image" in reasons["train/cats/empty.jpg"]
    assert "truncated" in reasons["train/cats/cut.jpg"] or "cannot decode" in reasons["train/cats/cut.jpg"]
    assert "decompression bomb" in reasons["train/cats/bomb.png"]
    assert "train/cats/loop.jpg" in reasons
    assert "UTF-8" in reasons["train/cats/caf\\udce9.jpg"]


def test_a_class_folder_that_is_a_file(tmp_path):
    data = copy_subset(tmp_path / "data", 2, splits=("train", "validation"))
    shutil.rmtree(data / "validation" / "dogs")
    (data / "validation" / "dogs").write_bytes(JPEG)  # a file where a class folder should be
    with pytest.raises(DatasetError) as err:
        extract(data, tmp_path / "out", verbose=False, **MOBILENET)
    assert "dogs" in str(err.value) and "validation" in str(err.value)


def test_an_unreadable_image_is_quarantined(tmp_path, bneck):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    secret = data / "train" / "dogs" / "secret.jpg"
    secret.write_bytes(JPEG)
    secret.chmod(0)
    done = bneck(
        tmp_path,
        ["extract", data, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--quiet", *MOBILENET_ARGS],
        honour_permissions=True,
    )
    assert done.returncode == 0, done.output[-2000:]
    assert "train/dogs/secret.jpg: unreadable: Permission denied" in done.output
    assert "train         4" in done.output or " 4 " in done.output
