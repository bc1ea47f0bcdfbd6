"""Resolve ``--weights`` to a local file and its sha256, without importing TensorFlow when possible.

``imagenet`` is looked up in ``$KERAS_HOME/models/<official file name>`` (default
``~/.keras``) and nowhere else: never in Keras' own fallback ``/tmp/.keras``, which
any local user can write to. Only when it is missing is it downloaded, into that same
folder. Where Keras publishes a hash for the file (an md5, for VGG, ResNet,
Inception, Xception and EfficientNet), the file must match it, found or downloaded.
``none`` means a seeded random initialisation, recorded as such. Anything else is a path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata

from bneck.core.errors import WeightsError
from bneck.core.files import open_regular
from bneck.core.hashing import sha256_file
from bneck.features.backbones.registry import Backbone

RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ResolvedWeights:
    """``label`` goes into files ('imagenet', 'none' or a file name); ``path`` is what Keras loads."""

    label: str
    sha256: str
    path: str | None


def keras_home() -> str:
    """Return ``$KERAS_HOME`` or ``~/.keras`` (never Keras' /tmp fallback)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("KERAS_HOME") or "~/.keras"))


def imagenet_candidates(file_name: str) -> list[str]:
    """Return where the official ``file_name`` is looked for: ``$KERAS_HOME/models`` only."""
    return [os.path.join(keras_home(), "models", file_name)]


def _check_published_hash(backbone: Backbone, path: str) -> None:
    """Raise WeightsError when ``path`` does not match the md5 Keras publishes for it."""
    if backbone.weights_md5 is None:
        return
    # Keras' ``file_hash`` is an md5 for most files and a sha256 for ConvNeXt's (by its length).
    digest = hashlib.sha256() if len(backbone.weights_md5) == 64 else hashlib.md5(usedforsecurity=False)
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != backbone.weights_md5:
        raise WeightsError(
            f"{path} is not the official ImageNet weights file for {backbone.name!r}: its {digest.name} is "
            f"{digest.hexdigest()}, and Keras publishes {backbone.weights_md5}. It is damaged or was "
            f"replaced; delete it (bneck will download it again), or pass --weights PATH to a file you trust."
        )


def _download_imagenet(backbone: Backbone, file_name: str) -> str:
    from bneck.core.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    origin = backbone.weights_url(file_name)
    where = os.path.join(keras_home(), "models")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        pass
    if not os.access(where, os.W_OK):  # Keras would then use /tmp/.keras, which anyone can fill
        raise WeightsError(
            f"ImageNet weights for backbone {backbone.name!r} need the file {file_name!r}, which is not in "
            f"{where}, and that folder cannot be written to, so it cannot be downloaded there (bneck never "
            f"uses Keras' fallback /tmp/.keras, which any local user can write to). Set KERAS_HOME to a folder "
            f"you own, copy the file to {where}/{file_name}, or pass --weights PATH."
        )
    try:
        path = keras.utils.get_file(
            file_name, origin, cache_subdir="models", cache_dir=keras_home(), file_hash=backbone.weights_md5
        )
    except Exception as exc:  # any network or I/O failure becomes one clear message
        raise WeightsError(
            f"ImageNet weights for backbone {backbone.name!r} need the file {file_name!r}, which is "
            f"not in the Keras cache ({where}) and could not be downloaded from {origin} "
            f"({str(exc).split(' -- ')[-1].strip() or type(exc).__name__}). "
            f"On a machine without network, copy the file to {where}/{file_name} (or set KERAS_HOME "
            f"to a folder whose models/ holds it), or pass --weights PATH to a local .h5 file, "
            f"or --weights none for random weights."
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
        found = next((p for p in imagenet_candidates(file_name) if os.path.isfile(p)), None)
        path = found or _download_imagenet(backbone, file_name)
        try:
            _check_published_hash(backbone, path)
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
