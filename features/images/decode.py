"""Decode an image file into a fixed-size RGB uint8 array, or say why it cannot be used.

Every mode Pillow knows ends as 8-bit RGB: grayscale, palette (with transparency),
RGBA/LA (alpha dropped, as ``keras.utils.load_img`` does), CMYK, and 16/32-bit
integer images (scaled down to 8 bits rather than clipped). Resizing is Pillow's
bilinear filter, the single method recorded as ``interpolation`` in every file.

What a hostile file can do is bounded here:

* only regular files are opened (``files.open_regular``), of at most
  ``MAX_IMAGE_FILE_BYTES``, read once into memory and decoded from there; Pillow may only
  identify them as one of ``FORMATS``: an EPS, PSD or any other format named
  ``.jpg`` never reaches a decoder outside that list (EPS would run Ghostscript);
* an image declaring more than ``MAX_PIXELS`` pixels, or more than
  ``MAX_IMAGE_BYTES`` of pixel data (bit depth x pixels), is refused from its
  header, before any pixel is decoded;
* decodes hold an estimate of their peak memory against one process-wide budget
  (``BNECK_DECODE_MEMORY``, default 1 GiB), so however many threads decode, the
  large images among them wait for each other instead of adding up.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from contextlib import contextmanager

import numpy as np
from PIL import Image

from bneck.core.files import MAX_IMAGE_FILE_BYTES, open_regular, read_whole

# Pillow's own default; an image that declares more pixels is treated as a
# decompression bomb before any pixel is decoded.
MAX_PIXELS = 89_478_485
# The most pixel data one image may hold: an RGB image at MAX_PIXELS. A 16-bit
# grayscale PNG of 9,400 x 9,400 (172 KB on disk) holds 177 MB and passes; one of
# 12,000 x 12,000 (288 MB) does not.
MAX_IMAGE_BYTES = 3 * MAX_PIXELS
# The formats bneck decodes (Pillow's names; JPEG includes its multi-picture MPO variant).
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
MAX_JPEG_SCANS = 100
# Bytes per pixel in Pillow's own storage, by mode (RGB and friends use 4).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Extra bytes per pixel the conversions below may hold at once (palette -> RGBA -> RGB).
_CONVERSION_BYTES = 8
_SINGLE_BAND = ("1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")


class UnusableImage(Exception):
    """The file has an image extension but cannot be decoded; ``str(exc)`` is the reason."""


class _MemoryBudget:
    """Bytes that decodes in flight may hold together; a decode waits until its estimate fits."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int):
        with self._cond:
            while self.used and self.used + nbytes > self.limit:
                self._cond.wait()
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def _budget_bytes() -> int:
    try:
        return max(64 << 20, int(os.environ.get("BNECK_DECODE_MEMORY", 1 << 30)))
    except ValueError:
        return 1 << 30


BUDGET = _MemoryBudget(_budget_bytes())


def decode_cost(mode: str, width: int, height: int) -> tuple[int, int]:
    """Return (bytes of pixel data, estimated peak bytes to decode and convert) for an image."""
    pixels = width * height
    stored = _STORED_BYTES.get(mode, 4)
    return pixels * stored, pixels * (stored + _CONVERSION_BYTES)


def _to_gray(img: Image.Image) -> Image.Image:
    """Return a single-band image as 8-bit 'L' (16/32-bit scaled down, float clipped)."""
    if img.mode in ("1", "L"):
        return img.convert("L")
    if img.mode == "F":
        return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32), 0, 255).astype(np.uint8), mode="L")
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        shift = 8
    else:  # 'I': 32-bit, often holding 16-bit values
        shift = 8 if arr.max(initial=0) <= 0xFFFF else 24
    gray = np.empty(arr.shape, np.uint8)
    for top in range(0, arr.shape[0], 512):  # in stripes: no full-size temporaries
        gray[top : top + 512] = arr[top : top + 512] >> shift
    return Image.fromarray(gray, mode="L")


def _fit(img: Image.Image, size: int, keep_aspect: bool) -> tuple[int, int]:
    """The (width, height) to resize to: size x size, or the longer side ``size`` keeping the aspect ratio."""
    if not keep_aspect:
        return size, size
    w, h = img.size
    scale = size / max(w, h, 1)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _to_rgb_resized(img: Image.Image, size: int, keep_aspect: bool = False) -> np.ndarray:
    target = _fit(img, size, keep_aspect)
    if img.mode in _SINGLE_BAND:
        # Resize the one band, then copy it into three: the same pixels as resizing an
        # RGB image of three equal bands, for a third of the memory.
        gray = _to_gray(img)
        if gray.size != target:
            gray = gray.resize(target, Image.BILINEAR)
        return np.asarray(gray.convert("RGB"), dtype=np.uint8)
    if img.mode == "P":
        rgb = img.convert("RGBA").convert("RGB")
    elif img.mode != "RGB":
        rgb = img.convert("RGB")
    else:
        rgb = img
    if rgb.size != target:
        rgb = rgb.resize(target, Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _check_scans(img: Image.Image, data: bytes) -> None:
    """Refuse a JPEG of more than ``MAX_JPEG_SCANS`` scans: each scan is decoded over the whole image, so
    a small progressive file repeating one scan 15,000 times took 96 s (and Ctrl-C waited for it). An
    SOS marker (FF DA) cannot occur inside entropy-coded data (an FF there is followed by 00 or a
    restart marker), so counting it counts the scans."""
    if img.format == "JPEG":
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise UnusableImage(
                f"a JPEG of {scans} scans (at most {MAX_JPEG_SCANS}: a progressive JPEG has about 10, and each "
                "more only costs decoding time)"
            )


def _check_size(img: Image.Image) -> int:
    """Refuse an image whose header declares too much; returns its estimated decode memory."""
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise UnusableImage(f"decompression bomb: declares {width}x{height} pixels (limit {MAX_PIXELS})")
    data, peak = decode_cost(img.mode, width, height)
    if data > MAX_IMAGE_BYTES:
        raise UnusableImage(
            f"too large: {width}x{height} {img.mode} pixels hold {data / 2**20:.0f} MB "
            f"(limit {MAX_IMAGE_BYTES / 2**20:.0f} MB)"
        )
    if peak > BUDGET.limit:
        raise UnusableImage(
            f"too large: decoding {width}x{height} {img.mode} needs about "
            f"{peak / 2**20:.0f} MB, more than the decode memory limit "
            f"{BUDGET.limit / 2**20:.0f} MB (BNECK_DECODE_MEMORY)"
        )
    return peak


def decode_image(path: str, size: int, sha256: str | None = None, keep_aspect: bool = False) -> np.ndarray:
    """Return the image at ``path`` as a (size, size, 3) uint8 array (``keep_aspect``: its longer
    side ``size``, for thumbnails a person looks at).

    With ``sha256``, the bytes decoded must be the bytes that were hashed before (a file
    changed in between is refused, so a row is never stored under another image's hash).
    Raises UnusableImage with a short reason for empty, truncated, undecodable,
    oversized, changed or non-regular files and formats outside ``FORMATS``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path) as handle:
                data = read_whole(handle, path, MAX_IMAGE_FILE_BYTES)
            if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
                raise UnusableImage("its bytes changed after it was hashed; rerun")
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                _check_scans(img, data)
                peak = _check_size(img) + len(data)  # some decoders copy the whole file first
                with BUDGET.hold(peak):
                    img.seek(0)  # first frame of animated GIF/WebP
                    img.load()
                    return _to_rgb_resized(img, size, keep_aspect)
    except UnusableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnusableImage(f"decompression bomb: {exc}") from None
    except FileNotFoundError:
        raise UnusableImage("file disappeared before it was decoded") from None
    except PermissionError:
        raise UnusableImage("permission denied") from None
    except Image.UnidentifiedImageError:
        raise UnusableImage(f"not a recognised image (empty, or not one of {', '.join(FORMATS)})") from None
    except OSError as exc:
        if exc.strerror and exc.strerror.startswith(("not a regular file", "not a real file", "too large")):
            raise UnusableImage(exc.strerror) from None
        raise UnusableImage(f"cannot decode: {exc}") from None
    except (SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise UnusableImage(f"cannot decode: {exc}") from None
