"""Output folders: bneck writes into, replaces and deletes only folders it made itself.

Every output folder carries a marker file, ``.bneck-folder.json``, naming the kind
of output it holds (``features``, ``models``, ``classifier``, ``finetuned``, ``run``,
``shards``). Before any work, an ``--out`` is checked (``check_folder``):

* a path that does not exist, or an empty folder, is taken (the marker is written);
* a folder carrying the marker of the same kind is bneck's own and is reused;
* anything else is refused: a file, a symbolic link, a folder that is not empty and
  has no marker (``--out .``, ``--out ~``, ``--out DATA_DIR``), a bneck folder of
  another kind, and a folder that lies inside an input folder or holds one.

Deleting is ``remove_owned``: it re-checks the marker (on the folder itself, never
through a symlink) just before removing, so a folder bneck did not make is never
deleted, whatever a run was told. The marker only protects against mistakes: a
folder someone hands you may carry one too, and all it lets bneck do is replace
that folder's own contents.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import datetime, timezone

from bneck.core.atomic import atomic_open, pid_alive, refused_writes_as_errors
from bneck.core.errors import ConfigError
from bneck.core.private import hold_claim

MARKER = ".bneck-folder.json"
KINDS = ("features", "models", "classifier", "finetuned", "ensemble", "run", "shards", "cache", "export")
# Files bneck (re)writes in a folder of each kind, found before any work when something else
# holds their name (a folder called report.html would fail only after all the work).
FILES_OF = {
    "features": ("train.h5", "validation.h5", "test.h5"),
    "models": ("leaderboard.csv",),
    "run": (
        "config.toml",
        "run.json",
        "leaderboard.csv",
        "report.md",
        "report.html",
        "worst_test.png",
        "confusion_all.png",
        "near_duplicates.png",
        "label_errors.png",
        "label_issues.csv",
    ),
}
_MARKER_MAX_BYTES = 4096


class OutputError(ConfigError):
    """An output path bneck must not write into, replace or delete."""


def _lstat(path: str):
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # not there (or a file on the way: ``_check_parent``)
        return None


def _check_parent(path: str, option: str) -> None:
    """Refuse a new ``path`` whose nearest existing ancestor is not a folder (``afile/sub``)."""
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent) and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    try:
        st = os.stat(parent)
    except OSError as exc:
        raise OutputError(
            f"{option} {path} cannot be created: {parent} cannot be read ({exc.strerror or exc})."
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(
            f"{option} {path} cannot be created: {parent} is {_describe(parent, st)}, not a "
            f"folder. Give a path under a folder."
        )


# Kinds whose folder is replaced whole on a rerun, and the file in it that lists what bneck wrote.
LISTED_IN = {"export": ("bneck-export.json", "files")}


def _check_nothing_unlisted(path: str, kind: str, option: str) -> None:
    """Refuse to replace a ``kind`` folder that holds files its own listing does not name (a user's notes
    put beside an export would be deleted with it)."""
    if kind not in LISTED_IN:
        return
    listing, field = LISTED_IN[kind]
    try:
        with open(os.path.join(path, listing), encoding="utf-8") as handle:
            listed = set(json.load(handle).get(field) or ())
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        listed = set()
    tops = {name.split("/", 1)[0] for name in listed if isinstance(name, str)} | {listing, MARKER}
    extra = sorted(set(os.listdir(path)) - tops)
    if extra:
        raise OutputError(
            f"{option} {path} is a bneck {kind} folder, but it also holds {', '.join(extra[:5])}"
            f"{' ...' if len(extra) > 5 else ''}, which bneck did not write there; replacing the "
            f"folder would delete them. Move them out, or choose another {option}."
        )


def folder_kind(path: str) -> str | None:
    """Return the kind named by ``path``'s marker, or None when it has no valid marker.

    Neither the folder nor its marker may be a symbolic link.
    """
    st, marker = _lstat(path), os.path.join(path, MARKER)
    mst = _lstat(marker)
    if (
        st is None
        or not stat.S_ISDIR(st.st_mode)
        or mst is None
        or not stat.S_ISREG(mst.st_mode)
        or mst.st_size > _MARKER_MAX_BYTES
    ):
        return None
    try:
        with open(marker, encoding="utf-8") as handle:
            kind = json.load(handle).get("kind")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return kind if kind in KINDS else None


def marker_body(kind: str) -> dict:
    """Return what a marker of ``kind`` says (JSON-ready)."""
    from bneck.core.versions import versions

    return {
        "kind": kind,
        "made_by": "bneck",
        "bneck_version": versions()["bneck_version"],
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_marker(folder: str, kind: str) -> None:
    """Write ``folder``'s marker (atomically)."""
    with atomic_open(os.path.join(folder, MARKER)) as handle:
        json.dump(marker_body(kind), handle, indent=1)


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_folder(path: str, kind: str, inputs: Iterable[str | None] = (), option: str = "--out") -> str:
    """Refuse ``path`` as a ``kind`` output unless bneck may write there; returns its absolute path.

    Writes nothing. Raises OutputError naming the path, what it is and what to do.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise OutputError(
            f"{option} must name a folder (a path, not empty). Received: {path!r:.80} ({type(path).__name__})."
        )
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    real = _real(path)
    for item in inputs:
        if item is None:
            continue
        source = _real(item)
        if _inside(real, source) or _inside(source, real):
            where = "is" if real == source else ("lies inside" if _inside(real, source) else "holds")
            raise OutputError(
                f"{option} {path} {where} the input {item}: bneck never writes its outputs into, "
                f"or around, what it reads. Choose an {option} that neither holds nor lies inside {item}."
            )
    st = _lstat(path)
    if st is None:
        _check_parent(path, option)
        return path
    what = _describe(path, st)
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{option} {path} is a symbolic link (to {os.readlink(path)}). bneck "
            f"writes only into real folders it made; give the folder itself, or a new path."
        )
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(
            f"{option} {path} is {what}, not a folder. Give a folder path (new, empty, or a bneck {kind} folder)."
        )
    found = folder_kind(path)
    if found == kind:
        _check_own_files(path, kind, option)
        _check_nothing_unlisted(path, kind, option)
        return path
    if found is not None:
        raise OutputError(
            f"{option} {path} is a bneck {found} folder, not {'an' if kind[0] in 'aeiou' else 'a'} "
            f"{kind} folder. "
            f"Choose another {option}: bneck never overwrites one kind of output "
            f"with another."
        )
    try:
        empty = not os.listdir(path)
    except OSError as exc:
        raise OutputError(f"{option} {path} cannot be listed ({exc.strerror or exc}).") from None
    if not empty:
        raise OutputError(
            f"{option} {path} already exists, is not empty, and was not made by bneck (it has no "
            f"{MARKER}), so bneck will not write into it or replace it. Choose a new folder, or an "
            f"empty one. (Folders made by bneck before 0.2 carry no marker: delete such a folder "
            f"yourself and rerun; cached features make that quick.)"
        )
    return path


def _check_own_files(path: str, kind: str, option: str) -> None:
    for name in FILES_OF.get(kind, ()):
        st = _lstat(os.path.join(path, name))
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise OutputError(
                f"{option} {path} holds {name}, which is {_describe(os.path.join(path, name), st)}, "
                f"where bneck writes a file: it was not made by bneck. Remove it, or choose "
                f"another {option}."
            )


def check_file(
    path: str, is_ours: Callable[[str], bool], what: str, inputs: Iterable[str] = (), option: str = "--csv"
) -> str:
    """Refuse ``path`` as an output file unless it is new or a ``what`` bneck wrote (``is_ours`` of
    its first 64 KB is True), and not inside an input folder; returns its absolute path."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    for item in inputs:
        if _inside(_real(path), _real(item)):
            raise OutputError(
                f"{option} {path} lies inside the input {item}; write it elsewhere "
                f"(a file added to a model folder makes it fail its manifest check)."
            )
    st = _lstat(path)
    if st is None:
        _check_parent(path, option)
        return path
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(
            f"{option} {path} is {_describe(path, st)}, not a {what} bneck wrote; "
            f"bneck replaces only its own files. Choose a new file name."
        )
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(1 << 16)  # the header may hold quoted line breaks
    except OSError as exc:
        raise OutputError(f"{option} {path} cannot be read ({exc.strerror or exc}).") from None
    if not is_ours(head):
        raise OutputError(
            f"{option} {path} already exists and is not a {what} bneck wrote, so bneck "
            f"will not overwrite it. Choose a new file name, or delete it yourself."
        )
    return path


def claim_folder(path: str, kind: str, inputs: Iterable[str] = (), option: str = "--out") -> str:
    """``check_folder``, then create the folder if needed and write its marker; returns its path."""
    path = check_folder(path, kind, inputs, option)
    _make_folder(path, option)
    if folder_kind(path) != kind:
        write_marker(path, kind)
    hold_claim(path, os.path.join(path, MARKER), option)  # one writer at a time (bneck.core.private)
    return path


def _make_folder(path: str, option: str) -> None:
    """``os.makedirs``, a failure said as one paragraph (a read-only place, /proc, no permission)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{option} {path} cannot be created ({exc.strerror or exc}). Choose a folder you can write to."
        ) from None


def remove_abandoned(final: str, kind: str) -> list[str]:
    """Remove the staging folders (``.NAME.tmp-PID-*``, ``.NAME.old-PID-*``) that a killed process
    left beside ``final``: only those whose process is gone and that carry the marker of ``kind``.
    Returns what was removed."""
    parent, stem = os.path.dirname(final), f".{os.path.basename(final)}."
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        rest = name[len(stem) :] if name.startswith(stem) else ""
        part, _, tag = rest.partition("-")
        pid = tag.split("-", 1)[0]
        if part not in ("tmp", "old") or not pid.isdigit() or pid_alive(int(pid)):
            continue
        leftover = os.path.join(parent, name)
        if folder_kind(leftover) == kind:
            remove_owned(leftover, kind)
            removed.append(leftover)
    return removed


def remove_owned(path: str, kind: str) -> None:
    """Delete ``path`` if, and only if, it is a real folder carrying the marker of ``kind``.

    Raises OutputError otherwise; symlinks inside are removed as links, never followed.
    """
    if folder_kind(path) != kind:
        raise OutputError(
            f"refusing to delete {path}: it is not a bneck {kind} folder "
            f"(no {MARKER} of that kind, or a symbolic link)."
        )
    shutil.rmtree(path)


def _describe(path: str, st) -> str:
    from bneck.core.files import kind_of

    if stat.S_ISREG(st.st_mode):
        return "a regular file"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    return kind_of(st.st_mode)


def _empty_folder(path: str) -> bool:
    st = _lstat(path)
    return st is not None and stat.S_ISDIR(st.st_mode) and not os.listdir(path)


@contextmanager
def staged_folder(final: str, kind: str, inputs: Iterable[str] = (), option: str = "--out"):
    """Yield a hidden temporary folder beside ``final``; on success it replaces ``final``.

    ``final`` must be new or a bneck ``kind`` folder (``check_folder``, also against
    ``inputs``). The previous ``final`` is first renamed aside, then the new one renamed
    in, then the old one deleted with ``remove_owned``: a kill at any moment leaves
    either the old folder, the new one, or none under the name, never a mix or a
    half-deleted folder, and nothing without the marker is ever deleted.
    """
    final = check_folder(final, kind, inputs, option)
    stem = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}")
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder, old = f"{stem}.tmp-{tag}", f"{stem}.old-{tag}"
    _make_folder(os.path.dirname(final), option)
    remove_abandoned(final, kind)
    try:
        with refused_writes_as_errors(final):
            try:
                os.makedirs(folder)
            except OSError as exc:
                raise OutputError(
                    f"{option} {final} cannot be created ({exc.strerror or exc}). Choose a folder you can write to."
                ) from None
            write_marker(folder, kind)
            yield folder
            check_folder(final, kind, inputs, option)  # again: it may have changed meanwhile
            if _lstat(final) is not None:
                os.replace(final, old)
            os.replace(folder, final)
    finally:
        for leftover in (folder, old):
            if folder_kind(leftover) == kind:
                remove_owned(leftover, kind)
            elif leftover == old and _empty_folder(old):  # an empty --out we were given: nothing to keep
                os.rmdir(old)
