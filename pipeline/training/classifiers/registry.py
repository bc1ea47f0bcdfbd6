"""The classifier registry: one entry per classifier stage 2 trains, and everything known about it.

An entry (``Classifier``) says whether it is a Keras head or a scikit-learn model and,
for a scikit-learn one: how to make it (``factory``), the grid ``--search`` tunes, the
training images each class needs, its out-of-core variant (``--max-memory``), how it
folds exactly into Keras layers for ``bneck export``, and the types its skops file
holds beyond scikit-learn's own (trusted on load, ``model_io``). The option tables, the
command line, training, loading and export all read this registry; nothing else lists
classifiers. Each built-in classifier is one module of this package ending with one
``register_classifier(...)``; classifiers of other distributions (the ``bneck.classifiers``
entry-point group, ``bneck.core.plugins``) are imported on the first lookup, after them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bneck.core.errors import ConfigError, choice_error
from bneck.core.plugins import CLASSIFIERS, PluginGate

KINDS = ("keras", "sklearn")


@dataclass(frozen=True)
class Classifier:
    """One classifier. ``factory(seed, counts)`` returns the unfitted estimator (``counts``: training images
    per class, or None); ``streamed(reshape, seed)`` the out-of-core model (``fit_blocks``); ``fold(keras, x,
    estimator, maps, n_classes)`` the probabilities tensor (``bneck.pipeline.export.fold``)."""

    name: str
    kind: str
    description: str
    factory: Callable[[int, Any], Any] | None = None
    grid: dict | None = None  # --search: {Pipeline parameter: candidates}
    min_per_class: int = 1  # training images each class needs (internal cross-validation)
    streamed: Callable[[str, int], Any] | None = None
    fold: Callable[..., Any] | None = None
    skops_types: tuple[str, ...] = ()  # "module.Class" paths its saved model holds, to trust on load


_REGISTRY: dict[str, Classifier] = {}
_PLUGINS = PluginGate(CLASSIFIERS)
builtins_registered = _PLUGINS.builtins_registered  # the package calls it after its built-in classifiers
_with_plugins = _PLUGINS.load


def register_classifier(entry: Classifier) -> Classifier:
    """Add ``entry`` to the registry; returns it. Raises ConfigError for a name already registered, an
    unknown kind, or a scikit-learn entry without a factory."""
    if not isinstance(entry, Classifier):
        raise ConfigError(f"register_classifier takes a Classifier entry. Received: {entry!r}.")
    if entry.name in _REGISTRY:
        raise ConfigError(
            f"a classifier named {entry.name!r} is already registered "
            f"({_REGISTRY[entry.name].description}); choose another name. "
            f"Registered: {', '.join(_REGISTRY)}."
        )
    if entry.kind not in KINDS:
        raise choice_error(f"classifier {entry.name!r} kind", KINDS, entry.kind)
    if entry.kind == "sklearn" and entry.factory is None:
        raise ConfigError(f"scikit-learn classifier {entry.name!r} needs a factory(seed, counts). Received: None.")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_classifier(name: str) -> None:
    """Remove classifier ``name`` (a plug-in's, or a test's); raises ConfigError for an unknown name."""
    get_classifier(name)
    del _REGISTRY[name]


def get_classifier(name: str, kind: str | None = None) -> Classifier:
    """Return the entry of classifier ``name`` (of ``kind``, 'keras' or 'sklearn', when given); raises
    ConfigError, with the closest name, for an unknown one or one of another kind."""
    _with_plugins()
    try:
        entry = _REGISTRY[name]
    except (KeyError, TypeError):
        raise choice_error("classifier", list(_REGISTRY), name) from None
    if kind is not None and entry.kind != kind:
        raise choice_error(f"a {kind} classifier", [e.name for e in list_classifiers(kind)], name)
    return entry


def list_classifiers(kind: str | None = None) -> list[Classifier]:
    """Return the registered entries (of ``kind``, 'keras' or 'sklearn', when given), in registration order:
    the built-in ones, then the plugins' (by entry-point name)."""
    _with_plugins()
    return [e for e in _REGISTRY.values() if kind is None or e.kind == kind]


def is_keras(name: str) -> bool:
    """Whether ``name`` is a registered Keras head."""
    _with_plugins()
    return name in _REGISTRY and _REGISTRY[name].kind == "keras"


def registered_skops_types() -> frozenset[str]:
    """Return the union of the registered entries' ``skops_types``."""
    _with_plugins()
    return frozenset(t for e in _REGISTRY.values() for t in e.skops_types)


class ClassifierNames(Sequence):
    """The registered names (of one ``kind``, or all), read from the registry at each use: a table's
    ``choices``, a help text or a membership test sees a classifier registered after import."""

    def __init__(self, kind: str | None = None):
        self.kind = kind

    def _names(self) -> list[str]:
        return [e.name for e in list_classifiers(self.kind)]

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(tuple(self._names()))
