"""Where ImageNet weights files are looked for, bneck's own weights folder, and what is on this machine.

``imagenet`` is looked up, in this order, in ``$KERAS_HOME/models`` (default ``~/.keras/models``,
Keras' own cache) and in bneck's weights folder (``$BNECK_WEIGHTS``, default
``$XDG_DATA_HOME/bneck/weights``, that is ``~/.local/share/bneck/weights``), so that files
added once with ``bneck weights add`` are found from any folder without a variable to
export. Never in Keras' fallback ``/tmp/.keras``, which any local user can write to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass

from bneck.core.atomic import atomic_target
from bneck.core.errors import WeightsError
from bneck.core.files import open_regular
from bneck.core.hashing import sha256_file
from bneck.core.private import make_private_folder
from bneck.features.backbones.published import TOP1_BY_ALPHA
from bneck.features.backbones.registry import BACKBONES, Backbone

_SIZES = (96, 128, 160, 192, 224)  # the sizes MobileNet v1/v2 publish files for


def keras_home() -> str:
    """Return ``$KERAS_HOME`` or ``~/.keras`` (never Keras' /tmp fallback)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("KERAS_HOME") or "~/.keras"))


def bneck_weights_dir() -> str:
    """Return bneck's own weights folder: ``$BNECK_WEIGHTS``, else ``$XDG_DATA_HOME/bneck/weights``."""
    if os.environ.get("BNECK_WEIGHTS"):
        return os.path.abspath(os.path.expanduser(os.environ["BNECK_WEIGHTS"]))
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.abspath(os.path.join(os.path.expanduser(data), "bneck", "weights"))


def weights_folders() -> list[str]:
    """The folders ``imagenet`` is looked up in, in order."""
    return [os.path.join(keras_home(), "models"), bneck_weights_dir()]


def imagenet_candidates(file_name: str) -> list[str]:
    """Where the official ``file_name`` is looked for, in order."""
    return [os.path.join(folder, file_name) for folder in weights_folders()]


def find_imagenet(file_name: str) -> str | None:
    """The first regular file named ``file_name`` in :func:`weights_folders`, or None."""
    return next((p for p in imagenet_candidates(file_name) if os.path.isfile(p)), None)


def check_published_hash(backbone: Backbone, path: str) -> None:
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


@dataclass(frozen=True)
class OfficialFile:
    """An official no-top ImageNet file: which backbone, width and input side it is for."""

    backbone: Backbone
    alpha: float | None
    size: int

    @property
    def top1(self) -> float:
        """ImageNet top-1 of this width (the backbone's figure where Keras publishes one width)."""
        return TOP1_BY_ALPHA.get(self.backbone.name, {}).get(self.alpha or 0.0) or self.backbone.top1 or 0.0


def official_files() -> dict[str, OfficialFile]:
    """Every official no-top ImageNet file name Keras publishes, for every backbone and width."""
    found: dict[str, OfficialFile] = {}
    for backbone in BACKBONES.values():
        sizes = (backbone.default_size, *_SIZES) if backbone.alphas else (backbone.default_size,)
        for alpha in backbone.alphas or (None,):
            for size in sizes:
                name = backbone.weights_file(alpha, size)
                if name and name not in found:
                    found[name] = OfficialFile(backbone, alpha, size)
    return found


def weights_here() -> dict[str, str]:
    """Official file name -> where it is, for every official file on this machine."""
    return {name: path for name in official_files() if (path := find_imagenet(name))}


def strongest_here() -> OfficialFile | None:
    """The official file on this machine with the highest ImageNet top-1 (at its default side), or None."""
    files = official_files()
    here = [files[name] for name in weights_here() if files[name].size == files[name].backbone.default_size]
    return max(here, key=lambda f: (f.top1, f.backbone.name), default=None)


def _official_name(path: str) -> str:
    name = os.path.basename(path)
    if name not in official_files():
        raise WeightsError(
            f"{path} is not named as an official Keras ImageNet weights file (no-top), so `imagenet` would "
            f"never find it. Official names look like 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_"
            f"no_top.h5' (`bneck backbones --json` shows each backbone's weights_file); for any other weights "
            f"file pass --weights PATH (`weights = PATH` under [extract] in a config). Received: {path}."
        )
    return name


def _sources(paths: list[str]) -> list[str]:
    """The files named, folders expanded to their official .h5 files; refuses what is neither."""
    found: list[str] = []
    for given in paths:
        path = os.path.abspath(os.path.expanduser(given))
        if os.path.isdir(path):
            try:
                found += sorted(os.path.join(path, n) for n in os.listdir(path) if n in official_files())
            except OSError as exc:
                raise WeightsError(f"{given} cannot be listed ({exc.strerror or exc}).") from None
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise WeightsError(
                f"bneck weights add takes weights files or folders of them. Received: {given!r}, "
                f"which is {'missing' if not os.path.lexists(path) else 'neither'}."
            )
    return found


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_readable_hdf5(path: str) -> None:
    """Raise WeightsError unless ``path`` is a regular file that reads whole and starts as HDF5 does."""
    try:
        with open_regular(path) as handle:
            head = handle.read(8)
            while handle.read(1 << 20):
                pass
    except OSError as exc:
        raise WeightsError(
            f"{path} cannot be read as a weights file ({exc.strerror or exc}); nothing was copied."
        ) from None
    if head != _HDF5_SIGNATURE:
        raise WeightsError(
            f"{path} carries an official weights file name but is not an HDF5 file (Keras' .h5 weights start with "
            f"the HDF5 signature); it is damaged or something else. Nothing was copied."
        )


def _private_folder(folder: str) -> str:
    """Create ``folder`` and any missing parent private to this user (0700, whatever the umask)."""
    try:
        make_private_folder(folder)
    except OSError as exc:
        raise WeightsError(
            f"bneck's weights folder {folder} cannot be created ({exc.strerror or exc}): set BNECK_WEIGHTS to a "
            "folder you can write to. Nothing was copied."
        ) from None
    if not os.path.isdir(folder):
        raise WeightsError(f"bneck's weights folder {folder} is not a folder: set BNECK_WEIGHTS to one.")
    return folder


def add_weights(paths: list[str]) -> list[tuple[str, str]]:
    """Copy official ImageNet files (or the official files in folders) into bneck's weights folder.

    Each name must be an official file name and match the hash Keras publishes for it, where it
    publishes one; all are checked before any is copied. Copies are private to this user (0600
    in a 0700 folder). Returns (file name, 'added' | 'replaced' | 'already there') per file.
    """
    files = official_files()
    sources = _sources(paths)
    for path in sources:  # every file read whole before any is copied
        _check_readable_hdf5(path)
        check_published_hash(files[_official_name(path)].backbone, path)
    if len({os.path.basename(p) for p in sources}) < len(sources):
        raise WeightsError(
            "bneck weights add was given two files of the same name; which one to keep is not for bneck to guess. "
            f"Received: {', '.join(sources)}."
        )
    folder = _private_folder(bneck_weights_dir())
    done = []
    for path in sources:
        target = os.path.join(folder, os.path.basename(path))
        if os.path.isfile(target) and sha256_file(target) == sha256_file(path):
            done.append((os.path.basename(path), "already there"))
            continue
        status = "replaced" if os.path.lexists(target) else "added"
        with atomic_target(target) as tmp, open_regular(path) as source:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        done.append((os.path.basename(path), status))
    return done


def offline() -> bool:
    """Whether ``$BNECK_OFFLINE`` is set (to anything but 0): no weights are downloaded, no host is tried."""
    return os.environ.get("BNECK_OFFLINE", "").strip() not in ("", "0")


def can_download(url: str, timeout: float = 1.5) -> bool:
    """Whether ``url``'s host answers on its port now (False when :func:`offline`)."""
    import socket
    from urllib.parse import urlsplit

    if offline():
        return False
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
