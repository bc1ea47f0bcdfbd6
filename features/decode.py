"""Decode an image file into a fixed-size RGB uint8 array, or say why it cannot be used.

Every mode Pillow knows ends as 8-bit RGB: grayscale, palette (with transparency),
RGBA/LA (alpha dropped, as ``keras.utils.load_img`` does), CMYK, and 16/32-bit
integer images (scaled down to 8 bits rather than clipped). Resizing is Pillow's
bilinear filter, the single method recorded as ``interpolation`` in every file.
"""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

# Pillow's own default; an image that declares more pixels is treated as a
# decompression bomb before any pixel is decoded.
MAX_PIXELS = 89_478_485


class UnusableImage(Exception):
    """The file has an image extension but cannot be decoded; ``str(exc)`` is the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        shift = 8 if img.mode.startswith("I;16") or arr.max(initial=0) <= 0xFFFF else 24
        return Image.fromarray((arr >> shift).astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P":
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def decode_image(path: str, size: int) -> np.ndarray:
    """Return the image at ``path`` as a (size, size, 3) uint8 array.

    Raises UnusableImage with a short reason for empty, truncated, undecodable or
    oversized files.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise UnusableImage(f"decompression bomb: declares {width}x{height} pixels "
                                        f"(limit {MAX_PIXELS})")
                img.seek(0)  # first frame of animated GIF/WebP
                img.load()
                rgb = _to_rgb(img)
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8)
    except UnusableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnusableImage(f"decompression bomb: {exc}") from None
    except FileNotFoundError:
        raise UnusableImage("file disappeared before it was decoded") from None
    except PermissionError:
        raise UnusableImage("permission denied") from None
    except Image.UnidentifiedImageError:
        raise UnusableImage("not a recognised image (empty or unknown format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise UnusableImage(f"cannot decode: {exc}") from None
