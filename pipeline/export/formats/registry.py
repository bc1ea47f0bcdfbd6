"""The export formats, by name: what each writes and how its own runtime runs it.

A format is one :class:`ExportFormat` registered once (``register_format``), in its own
module beside this one. Its optional packages are looked up only when it is asked for
(``importlib.util.find_spec``, nothing imported), so a format whose runtime is missing
is still listed, and asking for it says which package is missing and how to install it.
Formats of other distributions (the ``bneck.export_formats`` entry-point group) are imported
on the first lookup after the built-in ones (``bneck.core.plugins``), so they are listed after them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bneck.core.errors import ConfigError, choice_error
from bneck.core.folders import MARKER
from bneck.core.plugins import EXPORT_FORMATS, PluginGate

# Beside the model: the files export_model writes itself (bneck.pipeline.export imports this
# package, so its METADATA name is spelled here) and the folder's marker.
RESERVED = ("labels.json", "bneck-export.json", MARKER)


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    ``write(model, path)`` writes the deployable Keras model (uint8 images in, probabilities
    out) at ``path``, ``os.path.join(export folder, self.path)``. ``runner(path)`` loads what
    was written with the format's own runtime (never bneck's prediction code) and returns
    ``run(uint8 images) -> probabilities``: the check every export passes before it is kept.
    ``needs`` are the import names of the packages it needs beyond bneck's own (each also its
    pip name), installed by the pip ``extra``. ``runtime_settings`` are recorded in
    ``bneck-export.json`` for a service to use (e.g. OpenVINO's f32 hint).
    """

    name: str
    path: str
    write: Callable[[Any, str], None]
    runner: Callable[[str], Callable[[Any], Any]]
    needs: tuple[str, ...] = ()
    extra: str | None = None
    runtime_settings: Mapping[str, Any] = field(default_factory=dict)

    def missing(self) -> tuple[str, ...]:
        """Return the packages in ``needs`` that are not installed here (none imported)."""
        return tuple(m for m in self.needs if not _installed(m))

    def install_command(self) -> str:
        """Return the command that installs what this format needs."""
        return f'pip install -e ".[{self.extra}]"' if self.extra else f"pip install {' '.join(self.needs)}"


_FORMATS: dict[str, ExportFormat] = {}
_PLUGINS = PluginGate(EXPORT_FORMATS)
builtins_registered = _PLUGINS.builtins_registered  # the package calls it after its built-in formats
_with_plugins = _PLUGINS.load


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or a broken one
        return False


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to the formats ``bneck export`` offers; returns it.

    Raises ConfigError for a name already registered or a path that is not one plain
    file or folder name (or is one of the names written beside the model).
    """
    if fmt.name in _FORMATS:
        raise ConfigError(
            f"export format {fmt.name!r} is already registered; a format is registered once, "
            f"under a name of its own. Registered: {', '.join(_FORMATS)}."
        )
    if not fmt.name or fmt.name != fmt.name.strip() or " " in fmt.name:
        raise ConfigError(f"an export format's name must be one word. Received: {fmt.name!r}.")
    if fmt.path in ("", ".", "..") or os.path.basename(fmt.path) != fmt.path or fmt.path in RESERVED:
        raise ConfigError(
            f"export format {fmt.name!r} must write one file or folder, named plainly and not "
            f"{', '.join(RESERVED)}. Received: path={fmt.path!r}."
        )
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> ExportFormat:
    """Remove a registered format (tests, plugins); returns it. Raises ConfigError for an unknown name."""
    _with_plugins()
    if name not in _FORMATS:
        raise choice_error("export format", list_formats(), name)
    return _FORMATS.pop(name)


def list_formats() -> tuple[str, ...]:
    """Return every registered format's name, in registration order (available or not): the built-in
    ones, then the plugins' (by entry-point name)."""
    _with_plugins()
    return tuple(_FORMATS)


def get_format(name: str) -> ExportFormat:
    """Return the format called ``name``, ready to use.

    Raises ConfigError (one paragraph, before any work) for an unknown name (with the
    closest one) or for a format whose packages are not installed here (naming them and
    the command that installs them).
    """
    _with_plugins()
    if name not in _FORMATS:
        raise choice_error("--format", list_formats(), name)
    fmt = _FORMATS[name]
    missing = fmt.missing()
    if missing:
        others = [f for f, o in _FORMATS.items() if f != name and not o.missing()]
        raise ConfigError(
            f"--format {name} needs the Python package(s) {', '.join(missing)}, which are not "
            f"installed here. Install them with: {fmt.install_command()}  (or: pip install "
            f"{' '.join(missing)}). Or choose another format: {', '.join(others)}."
        )
    return fmt
