"""One decoding rule (issue 27): the function docs/export.md gives servers (Pillow and NumPy alone,
written into bneck-export.json as input.decode) decodes every image mode bneck's decoder accepts to
the very same pixels. A 16-bit PNG flipped class between `bneck predict` and a served export when the
snippet used Pillow's convert("RGB"), which clips, where bneck shifts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from bneck.features.images.decode import decode_image
from tests.conftest import ROOT

SIZE = 37  # odd, and smaller than the images: the resize matters


def serving_function():
    """``bneck_input`` as docs/export.md defines it, run from the page's own text."""
    page = (ROOT / "docs" / "export.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "def bneck_input" in b)
    namespace: dict = {}
    exec(block, namespace)  # noqa: S102 - the documentation's own code
    return namespace["bneck_input"]


def _images(rng) -> dict:
    w, h = 61, 45
    gray16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (h, w), dtype=np.uint8)])
    palette = Image.fromarray(rgb).quantize(16)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    return {
        "1.png": Image.fromarray(rgb[..., 0] > 127),
        "L.png": Image.fromarray(rgb[..., 0]),
        "LA.png": Image.fromarray(rgba[..., :2].copy(), "LA"),
        "P.png": palette,
        "P-transparent.png": transparent,
        "P.gif": palette,
        "RGB.png": Image.fromarray(rgb),
        "RGBA.png": Image.fromarray(rgba, "RGBA"),
        "I16.png": Image.fromarray(gray16),  # 16-bit grayscale: Pillow reads it as I;16 (or I)
        "I16-bright.png": Image.fromarray(np.full((h, w), 60000, np.uint16)),
        "CMYK.jpg": Image.fromarray(rgb).convert("CMYK"),
        "L.jpg": Image.fromarray(rgb[..., 1]),
        "RGB.bmp": Image.fromarray(rgb),
        "RGB.webp": Image.fromarray(rgb),
        "RGBA.webp": Image.fromarray(rgba, "RGBA"),
    }


@pytest.mark.pure
def test_the_served_decoding_equals_bneck_for_every_mode(tmp_path):
    bneck_input = serving_function()
    modes = set()
    for name, image in _images(np.random.default_rng(0)).items():
        path = tmp_path / name
        image.save(path, lossless=True) if name.endswith(".webp") else image.save(path)
        modes.add(Image.open(path).mode)
        ours, theirs = decode_image(str(path), SIZE), bneck_input(str(path), SIZE)
        assert theirs.shape == ours.shape == (SIZE, SIZE, 3) and theirs.dtype == np.uint8
        assert np.array_equal(ours, theirs), name
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK"} <= modes and modes & {"I;16", "I"}


@pytest.mark.pure
def test_convert_rgb_would_disagree_on_16_bit_images(tmp_path):
    """Why the rule is spelled out: Pillow alone clips a 16-bit image to white."""
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(tmp_path / "g.png")
    clipped = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    assert clipped.max() == 255 and decode_image(str(tmp_path / "g.png"), 8).max() == 30000 >> 8
