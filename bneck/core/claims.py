"""One writer per output folder at a time: two commands writing one --out at once refused, not mixed.

Two ``bneck train`` (or ``extract``) runs into the same --out both "succeeded", and the folder
held one's models and the other's leaderboard. ``claim_folder`` now takes an exclusive lock
(``flock``) on the folder's marker file, held until the stage that claimed it returns
(``releases_claims`` on the stage functions) or the process ends: a second process claiming the
folder meanwhile is refused in one paragraph before any work. Within one process a folder is
claimed once (a run's stages claim folders of their own).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import IO

from bneck.core.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no protection against two writers
    fcntl = None  # type: ignore[assignment]

_HELD: dict[str, IO] = {}


class FolderInUse(ConfigError):
    """Another process is writing the folder."""


def hold_claim(folder: str, lock_file: str, option: str = "--out") -> None:
    """Take the exclusive lock on ``lock_file`` (the marker of ``folder``) for this process; raises
    FolderInUse when another process holds it."""
    key = os.path.realpath(folder)
    if fcntl is None or key in _HELD:
        return
    handle = open(lock_file, "rb")  # noqa: SIM115 - held open: the lock lives as long as the handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FolderInUse(
            f"{option} {folder} is being written by another bneck command right now. Wait for it to finish "
            "(then run this one again: what it made is reused), or choose another folder. Nothing was written."
        ) from None
    _HELD[key] = handle


def releases_claims(function: Callable) -> Callable:
    """``function`` (a stage) with every folder it claimed released when it returns or raises."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        before = set(_HELD)
        try:
            return function(*args, **kwargs)
        finally:
            for key in set(_HELD) - before:
                _HELD.pop(key).close()

    return wrapper
