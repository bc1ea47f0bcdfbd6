"""Resolve ``--weights`` to a local file and its sha256, without importing TensorFlow when possible.

``imagenet`` is looked up where Keras itself caches it (``$KERAS_HOME/models/<official
file name>``, default ``~/.keras``); only when it is missing does Keras download it.
``none`` means a seeded random initialisation, recorded as such. Anything else is a path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

from .backbones import Backbone
from .errors import WeightsError
from .hashing import sha256_file

RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ResolvedWeights:
    """``label`` goes into files ('imagenet', 'none' or a file name); ``path`` is what Keras loads."""

    label: str
    sha256: str
    path: Optional[str]


def keras_home() -> str:
    """Return the folder Keras uses for its caches (same rule as ``keras.src.backend.config``)."""
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def imagenet_candidates(file_name: str) -> list[str]:
    """Return where Keras would have stored ``file_name`` (its home, then its /tmp fallback)."""
    return [os.path.join(keras_home(), "models", file_name),
            os.path.join("/tmp", ".keras", "models", file_name)]


def _download_imagenet(backbone: Backbone, file_name: str) -> str:
    from .tfimport import import_tensorflow

    import_tensorflow()
    import keras

    origin = backbone.weights_origin + file_name
    try:
        return keras.utils.get_file(file_name, origin, cache_subdir="models")
    except Exception as exc:  # any network or I/O failure becomes one clear message
        where = os.path.join(keras_home(), "models")
        raise WeightsError(
            f"ImageNet weights for backbone {backbone.name!r} need the file {file_name!r}, which is "
            f"not in the Keras cache ({where}) and could not be downloaded from {origin} "
            f"({str(exc).split(' -- ')[-1].strip() or type(exc).__name__}). "
            f"On a machine without network, copy the file to {where}/{file_name} (or set KERAS_HOME "
            f"to a folder whose models/ holds it), or pass --weights PATH to a local .h5 file, "
            f"or --weights none for random weights.") from None


def resolve_weights(backbone: Backbone, alpha: Optional[float], size: int,
                    weights: Optional[str]) -> ResolvedWeights:
    """Return the weights to load and their content hash.

    Raises WeightsError when the file is missing and cannot be downloaded.
    """
    if weights is None or str(weights).lower() == "none":
        version = metadata.version("keras")
        return ResolvedWeights("none", f"random-init:seed={RANDOM_INIT_SEED}:keras={version}", None)
    if str(weights).lower() == "imagenet":
        file_name = backbone.weights_file(alpha, size)
        found = next((p for p in imagenet_candidates(file_name) if os.path.isfile(p)), None)
        path = found or _download_imagenet(backbone, file_name)
        return ResolvedWeights("imagenet", sha256_file(path), path)
    path = os.path.abspath(os.path.expanduser(str(weights)))
    if not os.path.isfile(path):
        raise WeightsError(
            f"--weights must be 'imagenet', 'none' or the path of an existing weights file. "
            f"Received: weights={weights!r}, and no file exists at {path}.")
    return ResolvedWeights(os.path.basename(path), sha256_file(path), path)
