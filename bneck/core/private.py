"""Who may write what bneck writes: nobody else what it trusts, one process at a time an output folder.

bneck reuses what it finds in its state folder (which converted models this user checked)
and in the feature cache (rows, converted models). A permissive umask (000, or a group-shared
setup) would let another local user change them, and bneck would reuse the change as its own.
So, whatever the umask:

* everything bneck creates is writable by its owner only (``no_write_for_others`` around every
  command and API call), and the state folder and a new cache folder are private (0700);
* the state is used only when it belongs to this user and nobody else can write it;
* a cache is used only when its owner alone could have written every entry in it: a private
  folder of this user's, or a folder shared read-only by one writer (docs/extract.md, "Sharing a cache").

One writer per output folder at a time: two ``bneck train`` (or ``extract``) runs into the same --out
both "succeeded", and the folder held one's models and the other's leaderboard. ``claim_folder``
takes an exclusive lock (``flock``) on the folder's marker file (``hold_claim``), held until the
stage that claimed it returns (``releases_claims`` on the stage functions) or the process ends: a
second process claiming the folder meanwhile is refused in one paragraph before any work. Within
one process a folder is claimed once (a run's stages claim folders of their own).
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from contextlib import contextmanager
from typing import IO

from bneck.core.errors import ConfigError

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


@contextmanager
def no_write_for_others():
    """Within the block, files and folders are created without group or other write permission."""
    old = os.umask(0o022)
    os.umask(old | 0o022)
    try:
        yield
    finally:
        os.umask(old)


def make_private_folder(path: str) -> str:
    """Create ``path`` and every missing parent 0700, whatever the umask; returns ``path``.

    A folder that exists is left as it is. Raises OSError as ``os.mkdir`` does.
    """
    missing, folder = [], os.path.abspath(path)
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # made by another process meanwhile: its mode is its own business
            continue
        os.chmod(folder, 0o700)
    return path


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def written_by_others(path: str, owner: int | None = None) -> str | None:
    """Why someone other than ``owner`` (default: this user) could have written ``path``, or None.

    ``path`` itself is looked at (a symbolic link is not followed: nobody's link is trusted).
    """
    info = os.lstat(path)
    owner = os.getuid() if owner is None else owner
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if info.st_uid != owner:
        return f"it belongs to {_user(info.st_uid)}, not {_user(owner)}"
    group_writes = info.st_mode & stat.S_IWGRP and not _group_of_one(info.st_gid, owner)
    if group_writes or info.st_mode & stat.S_IWOTH:
        bits = (("its group", group_writes), ("every user", info.st_mode & stat.S_IWOTH))
        who = " and ".join(name for name, bit in bits if bit)
        return f"{who} can write it (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


@functools.lru_cache(maxsize=64)
def _group_of_one(gid: int, owner: int) -> bool:
    """Whether nobody but ``owner`` is in group ``gid`` (a user private group, umask 002 setups):
    then its write permission lets nobody else write."""
    try:
        import grp
        import pwd

        name = pwd.getpwuid(owner).pw_name
        members = set(grp.getgrgid(gid).gr_mem) | {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid}
    except (ImportError, KeyError):
        return False
    return members <= {name}


def is_private(path: str) -> bool:
    """Whether ``path`` is this user's and nobody else can even enter it (mode ...700 or less)."""
    info = os.stat(path)
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


def first_written_by_others(root: str) -> tuple[str, str] | None:
    """Return (path, why) for the first entry in the tree at ``root`` (root included) that someone
    other than root's owner could have written, or None when only that owner could have.

    A private folder of this user's is never walked: nobody else can reach what is inside.
    """
    if is_private(root):
        return None
    owner = os.lstat(root).st_uid
    why = written_by_others(root, owner)
    if why:
        return root, why
    for folder, folders, files in os.walk(root):
        for name in sorted(folders) + sorted(files):
            path = os.path.join(folder, name)
            why = written_by_others(path, owner)
            if why:
                return path, why
    return None


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
