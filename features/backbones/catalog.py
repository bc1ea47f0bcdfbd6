"""The backbone catalog: what ``scripts/backbone_catalog.py`` derived from the installed Keras.

Read without importing TensorFlow (a cache hit never pays for it). A constructor the
file does not hold (one a later Keras adds) is derived on first use
(``discover.derive_record``: it builds the model once, seconds).
"""

from __future__ import annotations

import functools
import json
import os

CATALOG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalog.json")


@functools.cache
def _read() -> dict:
    try:
        with open(CATALOG_FILE, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"keras": None, "backbones": {}}


def catalog() -> dict:
    """{lowercase constructor name: record} from catalog.json (empty when the file is absent)."""
    return _read()["backbones"]


def catalog_keras_version() -> str | None:
    """The Keras version the catalog was derived from."""
    return _read()["keras"]
