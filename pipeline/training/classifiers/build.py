"""Models made from registry entries: the in-memory Pipeline (``sklearn_models.build_sklearn``) and the
out-of-core variant."""

from __future__ import annotations

from bneck.core.errors import ConfigError
from bneck.pipeline.training.classifiers.registry import ClassifierNames, get_classifier, list_classifiers
from bneck.pipeline.training.sklearn_models import build_sklearn

__all__ = ["build_sklearn", "build_streamed", "exact_exports"]


def build_streamed(name: str, reshape: str, seed: int):
    """Return the unfitted out-of-core model of ``name`` (it trains with ``fit_blocks``). Raises ConfigError
    if ``name`` needs its features in memory."""
    entry = get_classifier(name, kind="sklearn")
    if entry.streamed is None:
        heads = ", ".join(ClassifierNames("keras"))
        raise ConfigError(
            f"classifier {name!r} needs its features in memory, but they do not fit the memory budget "
            f"(--max-memory, or without it half of this machine's memory). "
            f"Out of core, use one of {', '.join(e.name for e in list_classifiers('sklearn') if e.streamed)}, "
            f"a Keras head ({heads}), or raise --max-memory."
        )
    return entry.streamed(reshape, seed)


def exact_exports() -> str:
    """Return, in words, the classifiers ``bneck export`` folds into layers exactly (from the registry)."""
    names = [e.name for e in list_classifiers("sklearn") if e.fold is not None]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)
    return (
        f"{listed} (in memory, or streamed with --max-memory when the streamed model is a log-loss "
        "linear model or an MLP), and every Keras head"
    )
