"""The export formats: a registry (``registry.py``) and one module per format.

Adding a format is one module beside these, ending with ``register_format(ExportFormat(...))``,
plus its import line below (docs/export.md, "Adding a format"). The order below is the
order ``bneck export --help`` lists them in. Importing a format module imports no
runtime: each imports its runtime inside ``write`` and ``runner``.
"""
from __future__ import annotations

# The built-in formats, each registering itself (one line each).
from bneck.pipeline.export.formats import (
                                                    keras,  # noqa: E402,F401
                                                    onnx,  # noqa: E402,F401
                                                    openvino,  # noqa: E402,F401
                                                    savedmodel,  # noqa: E402,F401
                                                    tflite,  # noqa: E402,F401
)
from bneck.pipeline.export.formats.registry import (
                                                    ExportFormat,
                                                    get_format,
                                                    list_formats,
                                                    register_format,
                                                    unregister_format,
)

__all__ = ["ExportFormat", "get_format", "list_formats", "register_format", "unregister_format"]
