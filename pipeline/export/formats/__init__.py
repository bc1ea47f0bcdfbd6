"""The export formats: a registry (``registry.py``) and one module per format.

Adding a format is one module beside these, ending with ``register_format(ExportFormat(...))``,
plus its name in ``BUILTIN`` below (docs/export.md, "Adding a format"); a format kept outside
bneck registers itself when its own module is imported. ``BUILTIN``'s order is the order
``bneck export --help`` lists them in (explicit, so that no import sorter can change it).
Importing a format module imports no runtime: each imports its runtime inside ``write``
and ``runner``.
"""

from __future__ import annotations

import importlib

from bneck.pipeline.export.formats.registry import (
    ExportFormat,
    get_format,
    list_formats,
    register_format,
    unregister_format,
)

BUILTIN = ("keras", "savedmodel", "tflite", "onnx", "openvino")  # one entry per built-in format

for _name in BUILTIN:
    importlib.import_module(f"{__name__}.{_name}")  # each module registers its format

__all__ = ["BUILTIN", "ExportFormat", "get_format", "list_formats", "register_format", "unregister_format"]
