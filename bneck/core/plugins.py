"""Plugins: modules that other installed distributions declare under one of bneck's entry-point groups.

A distribution adds a runtime, a classifier or an export format the standard way, in its
``pyproject.toml``::

    [project.entry-points."bneck.export_formats"]
    mykeras = "my_pkg.my_format"

and each registry imports the modules of its group (``load_plugins``) when it is first used,
after its built-in entries, in the order of the entry points' names: importing the module is
what registers its entries (``register_format(...)`` at the module's end, as a built-in does).
A plugin that fails to load (its import raises, or its registration is refused) is skipped
with a ``BneckWarning`` naming its distribution, its entry point and the error; bneck goes on.
Each group is loaded once per process.
"""

from __future__ import annotations

import warnings
from importlib import metadata

from bneck.core.errors import BneckWarning

RUNTIMES, CLASSIFIERS, EXPORT_FORMATS = "bneck.runtimes", "bneck.classifiers", "bneck.export_formats"
GROUPS = (RUNTIMES, CLASSIFIERS, EXPORT_FORMATS)

_LOADED: set[str] = set()


def plugin_entry_points(group: str) -> list[metadata.EntryPoint]:
    """Return the installed entry points of ``group``, sorted by name (then distribution and value)."""
    found = metadata.entry_points(group=group)
    return sorted(found, key=lambda ep: (ep.name, _distribution(ep), ep.value))


def load_plugins(group: str) -> tuple[str, ...]:
    """Import every plugin of ``group`` once per process; returns the names of the entry points loaded
    by this call (none when the group was loaded before). A plugin that raises warns and is skipped."""
    if group in _LOADED:
        return ()
    _LOADED.add(group)  # first: a plugin that uses its registry while loading does not load it again
    try:
        entries = plugin_entry_points(group)
    except Exception as exc:  # noqa: BLE001 - a broken installed metadata file must not break bneck
        warnings.warn(
            f"the {group!r} plugins could not be listed and none is loaded ({type(exc).__name__}: {exc}).",
            BneckWarning,
            stacklevel=2,
        )
        return ()
    loaded = []
    for ep in entries:
        try:
            ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin's failure (exit too) is its own
            warnings.warn(
                f"plugin {ep.name!r} (entry point {ep.name} = {ep.value!r} in group {group!r}) of "
                f"the distribution {_distribution(ep)!r} failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                BneckWarning,
                stacklevel=2,
            )
            continue
        loaded.append(ep.name)
    return tuple(loaded)


class PluginGate:
    """A registry's plugins, loaded on its first lookup once its built-in entries are registered, so that
    no plugin is listed before a built-in one (the package calls ``builtins_registered`` after them)."""

    def __init__(self, group: str):
        self.group, self.open = group, False

    def builtins_registered(self) -> None:
        self.open = True

    def load(self) -> None:
        if self.open:
            load_plugins(self.group)


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "(unknown)"
