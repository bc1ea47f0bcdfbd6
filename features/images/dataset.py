"""Image discovery: which files are images, which class they belong to, which split.

Two layouts:

* split layout ``DATA/{train,validation,test}/CLASS/...`` (the reference split);
* single-root layout ``DATA/CLASS/...`` (the Caltech-101 recipe), split here
  deterministically and stratified by class.

Class index is the position in the sorted class-folder names. Anything whose name
starts with ``.`` is never a class or an image. Class folders are searched
recursively (like ``image_dataset_from_directory``).

Symbolic links are not followed out of the data folder: a linked folder (split,
class or sub-folder) is never entered, and a linked file that resolves outside the
data folder is quarantined, so a folder someone hands over cannot pull in files from
elsewhere on this machine. ``follow_links=True`` (``--follow-links``) follows them,
for data folders you built yourself out of links; loops are still never walked twice.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from bneck.core.errors import ConfigError, DatasetError

SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class ImageRecord:
    """One image: ``path`` is relative to the data root, with forward slashes."""

    path: str
    abspath: str
    label: int


LINKED_FOLDER = "a symbolic link to a folder: not followed (--follow-links follows links)"
LINKED_OUTSIDE = "a symbolic link to a file outside the data folder: not followed (--follow-links follows links)"


@dataclass
class Dataset:
    """The discovered dataset. ``quarantine`` lists (path, reason) for unusable names."""

    root: str
    layout: str
    class_names: list[str]
    splits: dict[str, list[ImageRecord]]
    split_spec: dict | None = None
    excluded_classes: list[str] = field(default_factory=list)
    quarantine: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def is_visible(name: str) -> bool:
    """Return False for hidden names (starting with '.'): never a class or an image."""
    return not name.startswith(".")


def is_image_name(name: str) -> bool:
    """Return True for a visible file name with an image extension (any case)."""
    return is_visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_folders(folder: str, follow_links: bool = False) -> tuple[list[str], list[str]]:
    """Return (class folder names, linked folder names left out) of ``folder``."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise DatasetError(f"cannot list the folder {folder}: {exc.strerror or exc}.") from None
    folders = [e for e in entries if is_visible(e) and os.path.isdir(os.path.join(folder, e))]
    undecodable = [e for e in folders if not _utf8_ok(e)]
    if undecodable:  # a class name is stored as UTF-8 text in every file bneck writes
        shown = os.fsencode(undecodable[0]).decode("utf-8", "backslashreplace")  # its bytes: caf\xe9
        if _utf8_bytes(os.fsencode(undecodable[0])):  # valid UTF-8, read through an ASCII locale (LC_ALL=C)
            raise DatasetError(
                f"the class folder '{os.path.join(folder, shown)}' has a UTF-8 name, but this Python reads file "
                f"names as {sys.getfilesystemencoding()} (the locale). Run with PYTHONUTF8=1 or a UTF-8 locale "
                "(LANG=C.UTF-8), then rerun."
            )
        raise DatasetError(
            f"the class folder '{os.path.join(folder, shown)}' has a name that is not valid UTF-8 (bytes in "
            "another encoding); bneck stores class names as UTF-8 text. Rename it (e.g. with `convmv`), then rerun."
        )
    linked = [] if follow_links else [e for e in folders if os.path.islink(os.path.join(folder, e))]
    return [e for e in folders if e not in linked], linked


def _utf8_bytes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _inside(path: str, real_root: str) -> bool:
    return os.path.realpath(path).startswith(real_root.rstrip(os.sep) + os.sep)


def _images_under(root: str, class_dir: str, follow_links: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """Return (relative image paths, quarantined (path, reason)) under ``class_dir``."""
    found, bad, visited = [], [], set()
    prefix = len(root.rstrip(os.sep)) + 1
    real_root = os.path.realpath(root)
    for current, dirs, files in os.walk(class_dir, followlinks=follow_links):
        real = os.path.realpath(current)
        if real in visited:  # a loop of links: walked once
            dirs[:] = []
            continue
        visited.add(real)
        rel_dir = current[prefix:].replace(os.sep, "/")
        if not follow_links:
            bad += [
                (f"{rel_dir}/{d}", LINKED_FOLDER)
                for d in sorted(dirs)
                if is_visible(d) and os.path.islink(os.path.join(current, d))
            ]
        dirs[:] = sorted(d for d in dirs if is_visible(d))
        for name in sorted(files):
            if not is_image_name(name):
                continue
            rel = f"{rel_dir}/{name}"
            if not _utf8_ok(rel):
                bad.append((rel.encode("utf-8", "backslashreplace").decode("utf-8"), "file name is not valid UTF-8"))
                continue
            full = os.path.join(current, name)
            if not follow_links and os.path.islink(full) and os.path.exists(full) and not _inside(full, real_root):
                bad.append((rel, LINKED_OUTSIDE))
                continue
            found.append(rel)
    return found, bad


def _scan_classes(root: str, base: str, classes: Sequence[str], follow_links: bool = False):
    images, bad, empty = {}, [], []
    for name in classes:
        paths, quarantined = _images_under(root, os.path.join(base, name), follow_links)
        bad.extend(quarantined)
        if not paths:
            empty.append(name)
        images[name] = paths
    return images, bad, empty


def parse_fractions(text) -> tuple[float, ...]:
    """Parse '0.7,0.15,0.15' into fractions for train/validation/test; raises ConfigError."""
    try:
        parts = tuple(float(p) for p in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6 or parts[0] == 0:
        raise ConfigError(
            "--split must be three non-negative fractions for train,validation,test that sum "
            f"to 1 with a non-empty train part, e.g. 0.7,0.15,0.15. Received: split={text!r}."
        )
    return parts


def _largest_remainder(fractions, n: int) -> list[int]:
    """Return integer counts summing to ``n`` in the given proportions (ties go to train)."""
    exact = [f * n for f in fractions]
    counts = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _split_class(paths: list[str], fractions, seed: int, class_name: str) -> list[list[str]]:
    # Order by a seeded hash of the path rather than a shuffle, so adding one image
    # moves at most a boundary instead of reshuffling every other image.
    def rank(p: str) -> str:
        return hashlib.sha256(f"{seed}:{p}".encode()).hexdigest()

    ordered = sorted(paths, key=rank)
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if len(ordered) < len(wanted):
        raise DatasetError(
            f"class {class_name!r} has {len(ordered)} image(s), too few to put at least one in "
            f"each of the {len(wanted)} non-empty splits of --split {','.join(map(str, fractions))}. "
            "Add images, use --exclude to drop the class, or set a split fraction to 0."
        )
    counts = _largest_remainder(fractions, len(ordered))
    for i in wanted:  # every non-empty split gets at least one image of every class
        if counts[i] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] = 1
    out, start = [], 0
    for c in counts:
        out.append(sorted(ordered[start : start + c]))
        start += c
    return out


def _check_exclude(exclude: Sequence[str], classes: Sequence[str]) -> None:
    unknown = sorted(set(exclude) - set(classes))
    if unknown:
        raise ConfigError(
            f"--exclude names classes that do not exist: {', '.join(map(repr, unknown))}. "
            f"Classes found: {', '.join(classes)}."
        )


def _records(root, class_names, paths_by_class) -> list[ImageRecord]:
    recs = [
        ImageRecord(p, os.path.join(root, p), class_names.index(c))
        for c, paths in paths_by_class.items()
        for p in paths
    ]
    return sorted(recs, key=lambda r: r.path)


def discover(
    root: str,
    splits: Sequence[str] | None = None,
    split=None,
    seed: int = 0,
    exclude: Sequence[str] = (),
    follow_links: bool = False,
) -> Dataset:
    """Find images and classes under ``root``.

    Returns a Dataset whose splits hold records sorted by path. Raises DatasetError
    for a missing folder, no classes, an empty class or a class mismatch between
    splits, and ConfigError for bad ``splits``, ``split`` or ``exclude`` values.
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    if os.path.exists(root) and not os.path.isdir(root):
        raise DatasetError(
            f"{root} is a file, not a data folder. Give the folder holding train/, "
            "validation/, test/ (each with one folder per class) or one folder per class."
        )
    if not os.path.isdir(root):
        raise DatasetError(
            f"data folder not found: {root}. Expected a folder holding "
            "train/, validation/, test/ (each with one folder per class) or "
            "one folder per class."
        )
    for name in splits or ():
        if name not in SPLITS:
            raise ConfigError(
                f"--splits must name splits among {', '.join(SPLITS)}. Received: splits={list(splits)!r}."
            )
    linked = [s for s in SPLITS if os.path.islink(os.path.join(root, s)) and os.path.isdir(os.path.join(root, s))]
    if linked and not follow_links:
        raise DatasetError(
            f"{os.path.join(root, linked[0])} is a symbolic link to a folder; bneck does not follow "
            "links out of the data folder unless you pass --follow-links (for data folders you "
            "built yourself)."
        )
    present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
    if present:
        _refuse_split_named_class(root, present)
        if split is not None:
            raise ConfigError(
                f"--split applies to a single-root layout (DATA/CLASS/...), but "
                f"{root} already has split folders ({', '.join(present)}). "
                f"Received: split={split!r}."
            )
        return _discover_split_layout(root, present, splits, exclude, follow_links)
    return _discover_single_root(root, splits, split, seed, exclude, follow_links)


def _refuse_split_named_class(root: str, present: list[str]) -> None:
    """A single-root folder with a class named like a split (train/ of images beside cats/, dogs/) is
    neither layout: say so, rather than take it for split folders missing their classes."""
    others = [
        e
        for e in sorted(os.listdir(root))
        if e not in SPLITS and is_visible(e) and os.path.isdir(os.path.join(root, e))
    ]
    holding_images = [s for s in present if any(is_image_name(n) for n in os.listdir(os.path.join(root, s)))]
    if others and holding_images:
        raise DatasetError(
            f"{root} looks like one folder per class, but one of its classes is named {holding_images[0]!r}, a "
            f"name bneck reserves for split folders ({', '.join(SPLITS)}: DATA/train/CLASS/...). Rename that "
            f"class folder (e.g. {holding_images[0]}_), then rerun."
        )


def _discover_split_layout(root, present, splits, exclude, follow_links) -> Dataset:
    chosen = list(splits) if splits else present
    missing = [s for s in chosen if s not in present]
    if missing:
        raise DatasetError(f"split folder(s) {', '.join(missing)} not found in {root}; found: {', '.join(present)}.")
    found = {s: _class_folders(os.path.join(root, s), follow_links) for s in chosen}
    per_split = {s: classes for s, (classes, _) in found.items()}
    all_classes = sorted(set().union(*per_split.values()))
    _check_exclude(exclude, all_classes)
    for s, classes in per_split.items():
        if not classes:
            raise DatasetError(
                f"no class folders in {os.path.join(root, s)}: expected one "
                "sub-folder per class, e.g. cats/ and dogs/"
                f"{_linked_hint(found[s][1])}."
            )
    reference = chosen[0]
    ref_set = set(per_split[reference]) - set(exclude)
    for s in chosen[1:]:
        other = set(per_split[s]) - set(exclude)
        if other != ref_set:
            raise DatasetError(
                f"class folders differ between splits: {reference}/ has "
                f"{sorted(ref_set)} but {s}/ has {sorted(other)} (only in {reference}: "
                f"{sorted(ref_set - other)}; only in {s}: {sorted(other - ref_set)}). "
                "Every split must hold the same classes."
            )
    class_names = sorted(ref_set)
    out, quarantine = {}, {}
    for s in chosen:
        images, bad, empty = _scan_classes(root, os.path.join(root, s), class_names, follow_links)
        if empty:
            raise DatasetError(
                f"empty class folder(s) in {os.path.join(root, s)}: "
                f"{', '.join(empty)} hold no images (extensions: "
                f"{', '.join(IMAGE_EXTENSIONS)}){_empty_hint(bad)}."
            )
        out[s] = _records(root, class_names, images)
        quarantine[s] = [(f"{s}/{name}", LINKED_FOLDER) for name in found[s][1]] + bad
    return Dataset(root, "splits", class_names, out, None, sorted(exclude), quarantine)


def _empty_hint(bad: Sequence[tuple[str, str]]) -> str:
    """Why class folders came out empty: links not followed, and other images left out with their reason."""
    other = [(path, why) for path, why in bad if why != LINKED_FOLDER]
    left_out = f" ({len(other)} image(s) left out, e.g. {other[0][0]}: {other[0][1]})" if other else ""
    return _linked_hint([path for path, why in bad if why == LINKED_FOLDER]) + left_out


def _linked_hint(linked: Sequence[str]) -> str:
    return (
        (f" ({len(linked)} symbolic link(s) were not followed, e.g. {linked[0]}; --follow-links follows them)")
        if linked
        else ""
    )


def _discover_single_root(root, splits, split, seed, exclude, follow_links) -> Dataset:
    classes, linked = _class_folders(root, follow_links)
    if not classes:
        direct = [n for n in os.listdir(root) if is_image_name(n)]
        if direct:
            raise DatasetError(
                f"{root} holds {len(direct)} image(s) directly (e.g. {sorted(direct)[0]}), but bneck "
                "learns classes from folders: put each class's images in a folder named after it "
                f"({root}/cats/, {root}/dogs/, ...), or use train/, validation/ and test/ folders "
                "that each hold one folder per class."
            )
        raise DatasetError(
            f"no images found: {root} has neither split folders "
            f"({', '.join(SPLITS)}) nor class folders{_linked_hint(linked)}."
        )
    _check_exclude(exclude, classes)
    class_names = [c for c in classes if c not in set(exclude)]
    if not class_names:
        raise DatasetError(f"--exclude removed every class of {root}.")
    fractions = parse_fractions(split) if split is not None else DEFAULT_FRACTIONS
    images, bad, empty = _scan_classes(root, root, class_names, follow_links)
    if empty:
        raise DatasetError(
            f"empty class folder(s) in {root}: {', '.join(empty)} hold no images "
            f"(extensions: {', '.join(IMAGE_EXTENSIONS)}){_empty_hint(bad)}."
        )
    parts = {s: {} for s in SPLITS}
    for c in class_names:
        for s, chunk in zip(SPLITS, _split_class(images[c], fractions, seed, c)):
            parts[s][c] = chunk
    chosen = list(splits) if splits else [s for s, f in zip(SPLITS, fractions) if f > 0]
    out = {s: _records(root, class_names, parts[s]) for s in chosen}
    spec = {"fractions": list(fractions), "seed": int(seed), "method": "stratified, seeded sha256 order"}
    bad = [(name, LINKED_FOLDER) for name in linked] + bad
    quarantine = {s: (bad if s == chosen[0] else []) for s in chosen}
    return Dataset(root, "single-root", class_names, out, spec, sorted(exclude), quarantine)
