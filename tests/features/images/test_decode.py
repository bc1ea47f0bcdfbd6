"""Every image mode becomes RGB at the requested size; unusable files say why."""

from __future__ import annotations

import io
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from bneck.features.images.decode import MAX_PIXELS, UnusableImage, decode_image
from tests.generated import make_images

pytestmark = pytest.mark.pure


@pytest.fixture
def photo(tmp_path):
    """A generated RGB JPEG (61x147 px: stripes and noise) in the place of a real photo."""
    return make_images(tmp_path / "src", 1, splits=("train",), offset=3) / "train" / "dogs" / "dog.3.jpg"


@pytest.mark.parametrize(
    "mode,ext",
    [
        ("L", "png"),
        ("RGBA", "png"),
        ("P", "gif"),
        ("CMYK", "jpg"),
        ("I;16", "png"),
        ("LA", "png"),
        ("RGB", "webp"),
        ("RGB", "bmp"),
    ],
)
def test_modes_become_rgb(tmp_path, photo, mode, ext):
    img = Image.open(photo).convert("RGB")
    if mode == "I;16":
        img = Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype("<u2"))
        assert img.mode == "I;16"
    else:
        img = img.convert(mode)
    path = tmp_path / f"x.{ext}"
    img.save(path)
    out = decode_image(str(path), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out.std() > 5  # real content, not a blank or saturated image
    if mode == "I;16":  # scaled to 8 bits, not clipped to 255
        expected = np.asarray(Image.open(photo).convert("L").resize((64, 64), Image.BILINEAR))
        assert np.abs(out[..., 0].astype(int) - expected).mean() < 2


def test_resize_matches_keras_load_img(photo):
    import keras

    ours = decode_image(str(photo), 224)
    theirs = keras.utils.img_to_array(keras.utils.load_img(photo, target_size=(224, 224), interpolation="bilinear"))
    np.testing.assert_array_equal(ours, theirs.astype(np.uint8))


def _bomb(path):
    # A PNG header that declares 20000x20000 pixels: rejected before decoding.
    img = Image.new("L", (1, 1))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the IHDR CRC valid
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case,reason",
    [
        ("empty", "not a recognised image"),
        ("random", "not a recognised image"),
        ("truncated", "truncated"),
        ("bomb", "decompression bomb"),
        ("missing", "disappeared"),
    ],
)
def test_unusable_files_give_a_reason(tmp_path, photo, case, reason):
    path = tmp_path / "x.jpg"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(os.urandom(5000))
    elif case == "truncated":
        path.write_bytes(photo.read_bytes()[:2000])
    elif case == "bomb":
        _bomb(path)
    with pytest.raises(UnusableImage, match=reason):
        decode_image(str(path), 32)
    assert MAX_PIXELS < 20000 * 20000


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every SOS segment with its entropy-coded data."""
    out, at = [], data.find(b"\xff\xda")
    while at != -1:
        end = at + 2
        while True:
            end = data.index(b"\xff", end + 1)
            if data[end + 1] not in (0x00, *range(0xD0, 0xD8)):
                break
        out.append((at, end))
        at = data.find(b"\xff\xda", end)
    return out


@pytest.mark.parametrize("repeats", [200, 3000])
def test_a_jpeg_repeating_a_scan_is_refused_before_it_is_decoded(tmp_path, photo, repeats):
    """Issue 27: a 2.1 MB progressive JPEG whose first AC scan was repeated 15,000 times took 96 s to
    decode (and Ctrl-C waited for it). A JPEG of more than MAX_JPEG_SCANS scans is refused from its bytes."""
    import time

    from bneck.features.images.decode import MAX_JPEG_SCANS

    buffer = io.BytesIO()
    Image.open(photo).convert("RGB").resize((400, 300)).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    scans = _scans(data)
    assert 5 <= len(scans) <= MAX_JPEG_SCANS  # an ordinary progressive JPEG decodes
    (tmp_path / "ok.jpg").write_bytes(data)
    assert decode_image(str(tmp_path / "ok.jpg"), 32).shape == (32, 32, 3)
    start, end = scans[1]  # the first AC scan
    (tmp_path / "slow.jpg").write_bytes(data[:end] + data[start:end] * repeats + data[end:])
    began = time.perf_counter()
    with pytest.raises(UnusableImage, match=rf"a JPEG of {len(scans) + repeats} scans \(at most {MAX_JPEG_SCANS}"):
        decode_image(str(tmp_path / "slow.jpg"), 32)
    assert time.perf_counter() - began < 2
