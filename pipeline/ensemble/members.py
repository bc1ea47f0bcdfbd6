"""The models an ensemble chooses from: verified folders of one extractor, scored on the same images.

Each candidate is read once through its manifest check (``artifacts.read_verified``), and its
validation and test predictions come from its own ``predictions.csv``: selection never runs a
model. Candidates must agree on what they were scored on, or nothing is selected: the same class
names in the same order, the same extractor, and for validation and test the same images (path
and sha256) with the same true classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from bneck.core.errors import ConfigError
from bneck.pipeline.artifacts import read_verified
from bneck.pipeline.image_splits import read_splits
from bneck.pipeline.manifests import MEMBER_KINDS, AnyManifest
from bneck.pipeline.predictions_csv import read_predictions

SCORED_SPLITS = ("validation", "test")  # every candidate must score the same images of these


class EnsembleError(ConfigError):
    """Model folders that cannot be combined: another kind, classes, extractor or set of images."""


@dataclass
class SplitPredictions:
    """One split's predictions of a candidate: image paths, integer labels, (N, C) probabilities."""

    paths: list[str]
    labels: np.ndarray
    probabilities: np.ndarray


@dataclass
class Candidate:
    """A verified model folder with its predictions by split and its record of images."""

    name: str
    folder: str
    manifest: AnyManifest
    manifest_sha256: str
    predictions: dict[str, SplitPredictions]
    record: dict  # splits.json

    def accuracy(self, split: str) -> float | None:
        value = self.manifest.metrics.get(split)
        return value.get("accuracy") if isinstance(value, dict) else None


def default_name(manifest: AnyManifest) -> str:
    """A model's name on the leaderboard: its classifier, or 'fine-tuned HEAD' for a fine-tuned model."""
    head = getattr(manifest, "head", None)
    return f"fine-tuned {head.classifier}" if head is not None else manifest.classifier


def checked_paths(model_dirs) -> list[str]:
    """The model folders as a list of path strings; raises EnsembleError for anything else."""
    items = [model_dirs] if isinstance(model_dirs, (str, os.PathLike)) else model_dirs
    try:
        paths = [os.fspath(d) for d in items]
    except TypeError:
        paths = []
    if not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        raise EnsembleError(
            "an ensemble takes a list of model folder paths (str or pathlib.Path, two or more). "
            f"Received: {model_dirs!r:.120}."
        )
    return paths


def _checked_names(names, count: int) -> list[str] | None:
    """``names`` as given (one distinct, printable, non-empty string per folder), or None."""
    if names is None:
        return None
    ok = (
        isinstance(names, (list, tuple))
        and len(names) == count
        and all(isinstance(n, str) and n.strip() and n.isprintable() and len(n) <= 200 for n in names)
        and len(set(names)) == len(names)
    )
    if not ok:
        raise EnsembleError(
            f"names must give each of the {count} model folders its own name (distinct, printable, non-empty "
            f"strings of at most 200 characters, in the folders' order). Received: {names!r:.160}."
        )
    return list(names)


def read_candidates(folders: list[str], names: list[str] | None = None) -> list[Candidate]:
    """Return the verified candidates (``names``: one per folder, else ``default_name``, numbered when two
    agree). Raises ArtifactError for a folder that fails its check, EnsembleError for folders that
    cannot be combined (naming the first that differs and how)."""
    if len(folders) < 2:
        raise EnsembleError(
            f"an ensemble combines two or more model folders; received {len(folders)} ({', '.join(folders) or 'none'})."
        )
    names = _checked_names(names, len(folders))
    absolute = [os.path.abspath(os.path.expanduser(str(f))) for f in folders]
    out = []
    for folder in absolute:
        _refuse_output_folders(folder)
        verified = read_verified(folder)
        if verified.manifest.kind not in MEMBER_KINDS:
            raise EnsembleError(
                f"{folder} holds an {verified.manifest.kind}; an ensemble's members are classifiers "
                f"(`bneck train`) and fine-tuned models (`bneck finetune`), never another ensemble. Give "
                "the folders of its own members instead."
            )
        predictions = _predictions(verified)
        out.append(
            Candidate(
                "",
                folder,
                verified.manifest,
                verified.manifest_sha256,
                predictions,
                read_splits(verified.files, folder),
            )
        )
    _name(out, names)
    _check_distinct(out)
    _check_same_data(out)
    return out


def _refuse_output_folders(folder: str) -> None:
    """A run, models or features folder holds model folders (or none): say which to give instead."""
    from bneck.core.folders import folder_kind

    kind = folder_kind(folder)
    inside = {
        "run": "RUN/models/NAME, RUN/finetuned and RUN/ensemble",
        "models": "MODELS_DIR/NAME, one per classifier",
        "features": "none: train classifiers on it first (`bneck train`)",
    }
    if kind in inside:
        raise EnsembleError(
            f"{folder} is a bneck {kind} folder, not a model folder; an ensemble's members are model "
            f"folders (in a {kind} folder: {inside[kind]}). Give those instead."
        )


def _name(candidates: list[Candidate], names: list[str] | None) -> None:
    """Give each candidate its name: ``names``, else its leaderboard name (printable, at most 200
    characters), numbered ' #1', ' #2' when several share one, never equal to another's."""
    if names is not None:
        for c, name in zip(candidates, names):
            c.name = name
        return
    given = [_printable(default_name(c.manifest)) for c in candidates]
    taken = {name for name in given if given.count(name) == 1}  # a name only one model has stays its own
    for c, base in zip(candidates, given):
        if given.count(base) == 1:
            c.name = base
            continue
        number = 1
        while f"{base} #{number}" in taken:
            number += 1
        c.name = f"{base} #{number}"
        taken.add(c.name)


def _printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (no terminal control sequence)."""
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return shown[:200] or "model"


def _check_distinct(candidates: list[Candidate]) -> None:
    """Refuse one model given twice: the same folder under two paths, or a copy of a folder."""
    seen: dict[str, Candidate] = {}
    for c in candidates:
        model_file = c.manifest.artifacts.get(c.manifest.model_file, c.manifest_sha256)  # its model's bytes
        for key in (os.path.realpath(c.folder), c.manifest_sha256, model_file):
            if key in seen:
                raise EnsembleError(
                    f"{c.folder} holds the same model as {seen[key].folder} (the same folder, or a copy of it: "
                    "the same manifest or model file by sha256); give each model folder once."
                )
            seen[key] = c


def _predictions(verified) -> dict[str, SplitPredictions]:
    """The folder's predictions.csv by split, labels as indices of its class names."""
    name = "predictions.csv"
    if name not in verified.files:
        raise EnsembleError(
            f"{verified.folder} holds no {name}: an ensemble is selected from its members' saved "
            "predictions. Train the model again with this bneck."
        )
    rows = read_predictions(verified.files[name].decode("utf-8", errors="surrogateescape"), f"{verified.folder}/{name}")
    classes = {c: i for i, c in enumerate(verified.manifest.class_names)}
    by_split: dict[str, list] = {}
    for r in rows:
        if list(r["probabilities"]) != verified.manifest.class_names:
            raise EnsembleError(f"{verified.folder}/{name}: its columns are not the manifest's class names.")
        by_split.setdefault(r["split"], []).append(r)
    out = {
        split: SplitPredictions(
            [r["path"] for r in part],
            np.asarray([classes[r["true"]] for r in part], np.int64),
            np.asarray([list(r["probabilities"].values()) for r in part], np.float64),
        )
        for split, part in by_split.items()
    }
    _check_predictions(verified, out)
    return out


def _check_predictions(verified, predictions: dict[str, SplitPredictions]) -> None:
    """Each row must be probabilities (in [0, 1], summing to 1 as written to 6 decimals), each image listed
    once, and each split's accuracy the one the folder's manifest records: a predictions file that
    disagrees with its own model's metrics is not selected from."""
    for split, part in predictions.items():
        p = part.probabilities
        recorded = verified.manifest.metrics.get(split)
        accuracy = float(np.mean(p.argmax(axis=1) == part.labels)) if len(p) else None
        why = (
            "a row that is not probabilities (a value outside [0, 1], or not summing to 1)"
            if len(p) and ((p < 0).any() or (p > 1).any() or np.abs(p.sum(axis=1) - 1).max() > 1e-4)
            else "an image listed twice"
            if len(set(part.paths)) != len(part.paths)
            else f"an accuracy of {accuracy} where its manifest records {recorded.get('accuracy')}"
            if isinstance(recorded, dict) and (accuracy is None or abs(accuracy - recorded.get("accuracy", -1)) > 1e-9)
            else ""
        )
        if why:
            raise EnsembleError(
                f"{verified.folder}/predictions.csv holds, for its {split} images, {why}; bneck writes no such "
                "file, so the folder is not selected from. Train the model again."
            )


def _images(candidate: Candidate, split: str) -> dict[str, tuple[str, int]]:
    """{path: (sha256, label)} of a split's recorded images."""
    part = candidate.record["splits"].get(split) or {"paths": [], "sha256": [], "labels": []}
    return {p: (s, int(v)) for p, s, v in zip(part["paths"], part["sha256"], part["labels"])}


def _check_same_data(candidates: list[Candidate]) -> None:
    first = candidates[0]
    for c in candidates[1:]:
        why = (
            f"its classes are {c.manifest.class_names}, not {first.manifest.class_names}"
            if c.manifest.class_names != first.manifest.class_names
            else f"its features come from another extractor ({_extractor_difference(first, c)})"
            if c.manifest.extractor_key != first.manifest.extractor_key
            else _split_difference(first, c)
        )
        if why:
            raise EnsembleError(
                f"{c.folder} ({c.name}) cannot join {first.folder} ({first.name}) in an ensemble: {why}. The "
                "members of an ensemble are models of one extractor scored on the same validation and test "
                "images (the models of one run, or of runs over the same features)."
            )
    if "validation" not in first.predictions:
        raise EnsembleError(
            f"{first.folder} scored no validation images: an ensemble is selected on validation predictions, "
            "so its members need a validation split."
        )


def _extractor_difference(first: Candidate, other: Candidate) -> str:
    mine, theirs = first.manifest.extractor, other.manifest.extractor
    keys = [k for k in dict.fromkeys([*mine, *theirs]) if mine.get(k) != theirs.get(k)]
    return "; ".join(f"{k}: {theirs.get(k)!r} vs {mine.get(k)!r}" for k in keys[:4]) or "another key"


def _split_difference(first: Candidate, other: Candidate) -> str:
    for split in SCORED_SPLITS:
        if (split in first.predictions) != (split in other.predictions):
            return f"one of them scored {split} images and the other did not"
        if split not in first.predictions:
            continue
        mine, theirs = first.predictions[split], other.predictions[split]
        if sorted(zip(mine.paths, mine.labels.tolist())) != sorted(zip(theirs.paths, theirs.labels.tolist())):
            return f"its {split} predictions are not of the same images and classes"
        if _images(first, split) != _images(other, split):
            return f"its record of {split} images (paths, sha256, labels) differs"
    return ""


def aligned(candidates: list[Candidate], split: str) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """(paths, labels, one (N, C) array per candidate) of ``split``, rows in the first candidate's order."""
    first = candidates[0].predictions[split]
    arrays = []
    for c in candidates:
        mine = c.predictions[split]
        row = {p: i for i, p in enumerate(mine.paths)}
        arrays.append(mine.probabilities[[row[p] for p in first.paths]])
    return list(first.paths), first.labels, arrays


def common_splits(candidates: list[Candidate]) -> list[str]:
    """The splits every candidate scored, in the order train, validation, test."""
    return [s for s in ("train", "validation", "test") if all(s in c.predictions for c in candidates)]
