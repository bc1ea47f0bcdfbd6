"""The versions of the software that makes bneck's files, written into each of them."""

from __future__ import annotations

import platform
from importlib import metadata


def versions() -> dict:
    """Return the versions of the software that makes features."""
    out = {"python": platform.python_version()}
    for dist, attr in (
        ("bneck", "bneck_version"),
        ("tensorflow", "tensorflow_version"),
        ("keras", "keras_version"),
        ("h5py", "h5py_version"),
        ("numpy", "numpy_version"),
        ("pillow", "pillow_version"),
    ):
        try:
            out[attr] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[attr] = "unknown"
    return out
