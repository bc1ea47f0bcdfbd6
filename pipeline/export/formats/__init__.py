"""The export formats: a registry (``registry.py``) and one module per format.

Adding a format is one module beside these, ending with ``register_format(ExportFormat(...))``,
plus its name in ``BUILTIN`` below (docs/export.md, "Adding a format"); a format kept outside
bneck registers itself when its own module is imported, and one declared under the
``bneck.export_formats`` entry-point group is imported on the first lookup, after these
(docs/export.md, "From your own package"). ``BUILTIN``'s order is the order
``bneck export --help`` lists them in (explicit, so that no import sorter can change it).
Importing a format module imports no runtime: each imports its runtime inside ``write``
and ``runner``.
"""

from __future__ import annotations

import importlib

from bneck.pipeline.export.formats.registry import (
    ExportFormat,
    builtins_registered,
    get_format,
    list_formats,
    register_format,
    unregister_format,
)

BUILTIN = ("keras", "savedmodel", "tflite", "onnx", "openvino")  # one entry per built-in format

for _name in BUILTIN:
    importlib.import_module(f"{__name__}.{_name}")  # each module registers its format
builtins_registered()  # the plugins' formats come after these, on the first lookup

__all__ = ["BUILTIN", "ExportFormat", "get_format", "list_formats", "register_format", "unregister_format"]
