"""Resolve ``--weights`` to a local file and its sha256, without importing TensorFlow when possible.

``imagenet`` is looked up under its official file name in ``$KERAS_HOME/models`` (default
``~/.keras``), then in bneck's weights folder (``weights_store``), and nowhere else: never in
Keras' own fallback ``/tmp/.keras``, which any local user can write to. Only when it is
missing is it downloaded, into ``$KERAS_HOME/models`` (never with ``$BNECK_OFFLINE`` set).
Where Keras publishes a hash for the file (an md5, for VGG, ResNet, Inception, Xception and
EfficientNet), the file must match it, found or downloaded.
``none`` means a seeded random initialisation, recorded as such. Anything else is a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

from bneck.core.errors import WeightsError
from bneck.core.hashing import sha256_file
from bneck.features.backbones.registry import Backbone
from bneck.features.backbones.weights_store import (
    bneck_weights_dir,
    check_published_hash,
    find_imagenet,
    keras_home,
    offline,
)

RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ResolvedWeights:
    """``label`` goes into files ('imagenet', 'none' or a file name); ``path`` is what Keras loads."""

    label: str
    sha256: str
    path: str | None


def _download_imagenet(backbone: Backbone, file_name: str) -> str:
    from bneck.core.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    origin = backbone.weights_url(file_name)
    where = os.path.join(keras_home(), "models")
    if offline():
        raise WeightsError(
            f"ImageNet weights for backbone {backbone.name!r} need the file {file_name!r}, which is not in the "
            f"Keras cache ({where}) nor in bneck's weights folder ({bneck_weights_dir()}), and BNECK_OFFLINE is "
            f"set, so it is not downloaded. Add the file with `bneck weights add FILE`, or pass --weights PATH "
            f"to a local .h5 file, or --weights none for random weights; `bneck weights` shows the files here."
        )
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        pass
    if not os.access(where, os.W_OK):  # Keras would then use /tmp/.keras, which anyone can fill
        raise WeightsError(
            f"ImageNet weights for backbone {backbone.name!r} need the file {file_name!r}, which is not in "
            f"{where}, and that folder cannot be written to, so it cannot be downloaded there (bneck never "
            f"uses Keras' fallback /tmp/.keras, which any local user can write to). Add the file with "
            f"`bneck weights add FILE` (into {bneck_weights_dir()}), set KERAS_HOME to a folder you own, "
            f"or pass --weights PATH."
        )
    try:
        path = keras.utils.get_file(
            file_name, origin, cache_subdir="models", cache_dir=keras_home(), file_hash=backbone.weights_md5
        )
    except Exception as exc:  # any network or I/O failure becomes one clear message
        raise WeightsError(
            f"ImageNet weights for backbone {backbone.name!r} need the file {file_name!r}, which is "
            f"not in the Keras cache ({where}) nor in bneck's weights folder ({bneck_weights_dir()}) and "
            f"could not be downloaded from {origin} ({str(exc).split(' -- ')[-1].strip() or type(exc).__name__}). "
            f"On a machine without network, add the file with `bneck weights add FILE` (or copy it to "
            f"{where}/{file_name}), or pass --weights PATH to a local .h5 file, or --weights none for random "
            f"weights; `bneck backbones` shows which backbones' files are here."
        ) from None
    if os.path.dirname(os.path.abspath(path)) != os.path.abspath(where):
        raise WeightsError(f"Keras placed the downloaded weights at {path}, outside {where}; refused.")
    return path


def resolve_weights(backbone: Backbone, alpha: float | None, size: int, weights: str | None) -> ResolvedWeights:
    """Return the weights to load and their content hash.

    Raises WeightsError when the file is missing and cannot be downloaded.
    """
    if weights is None or str(weights).lower() == "none":
        version = metadata.version("keras")
        return ResolvedWeights("none", f"random-init:seed={RANDOM_INIT_SEED}:keras={version}", None)
    if str(weights).lower() == "imagenet":
        file_name = backbone.weights_file(alpha, size)
        if file_name is None:
            raise WeightsError(
                f"Keras publishes no ImageNet weights file for backbone {backbone.name!r}. "
                f"Pass --weights PATH to a weights file for it, or --weights none for random weights."
            )
        path = find_imagenet(file_name) or _download_imagenet(backbone, file_name)
        try:
            check_published_hash(backbone, path)
            return ResolvedWeights("imagenet", sha256_file(path), path)
        except OSError as exc:
            raise WeightsError(f"the ImageNet weights file {path} cannot be read: {exc.strerror or exc}.") from None
    path = os.path.abspath(os.path.expanduser(str(weights)))
    if not os.path.isfile(path):
        raise WeightsError(
            f"--weights must be 'imagenet', 'none' or the path of an existing weights file. "
            f"Received: weights={weights!r}, and no file exists at {path}."
        )
    try:
        return ResolvedWeights(os.path.basename(path), sha256_file(path), path)
    except OSError as exc:
        raise WeightsError(f"--weights {path} cannot be read as a weights file: {exc.strerror or exc}.") from None
