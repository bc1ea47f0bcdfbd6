"""Model folders (classifiers, fine-tuned models): what is in them, and loading them safely.

``MODELS_DIR/NAME/manifest.json`` records the model's configuration, the class names,
the extractor (key and full spec), the feature files' sha256, the metrics, the
software versions and the sha256 of every other file in the folder.

What loading guarantees does not rest on the manifest (anyone can re-hash a folder
they changed); it rests on the formats: scikit-learn models are skops files loaded
with a fixed list of trusted types, Keras models are checked against a fixed list
of layer types before Keras reads them with ``safe_mode=True`` (``model_io``).
Nothing is ever unpickled. The manifest adds integrity: a folder loads only when it
holds exactly the files its manifest lists (no other file, no sub-folder, no
symbolic link anywhere) and each file's bytes match their sha256. Those bytes are
read once, hashed and handed to the loader from memory, so what was checked is what
is loaded.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bneck.core.atomic import atomic_open
from bneck.core.files import open_regular
from bneck.core.hashing import sha256_bytes, sha256_file
from bneck.core.versions import versions
from bneck.pipeline.manifests import (
    MANIFEST,
    MANIFEST_VERSION,
    MODEL_FILES,
    AnyManifest,
    ArtifactError,
    EnsembleManifest,
    ManifestError,
    ModelManifest,
    parse_manifest,
)

_MAX_MANIFEST_BYTES = 16 << 20


def write_json(path: str, obj) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=1, default=_json_default)


def write_history(folder: str, history: dict) -> None:
    """Write a Keras-style history dict as ``history.csv`` (one row per epoch)."""
    with open(os.path.join(folder, "history.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        keys = list(history)
        writer.writerow(["epoch", *keys])
        for i in range(len(history[keys[0]])):
            writer.writerow([i + 1, *(f"{history[k][i]:.6g}" for k in keys)])


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_manifest(folder: str, manifest: ModelManifest) -> ModelManifest:
    """Hash every file in ``folder`` (its marker included) and write ``manifest`` last; returns it."""
    files = sorted(n for n in os.listdir(folder) if n != MANIFEST)
    for name in files:
        if not stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode):
            raise RuntimeError(f"{folder}/{name} is not a regular file; model folders hold only files")
    manifest.manifest_version = MANIFEST_VERSION
    manifest.versions = versions()
    manifest.created_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest.artifacts = {n: sha256_file(os.path.join(folder, n)) for n in files}
    write_json(os.path.join(folder, MANIFEST), manifest.to_json())
    return manifest


def read_history(data: bytes) -> dict:
    """Parse ``write_history``'s ``history.csv`` (its bytes) back into a history dict."""
    rows = list(csv.DictReader(data.decode("utf-8").splitlines()))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [float(r[k]) for r in rows] for k in keys}


@dataclass
class VerifiedFolder:
    """A model folder whose files all matched its manifest: their bytes, as they were hashed."""

    folder: str
    manifest: AnyManifest
    files: dict[str, bytes]
    manifest_sha256: str


@dataclass
class LoadedClassifier:
    """A verified model: ``kind`` is 'keras', 'sklearn' or 'finetuned'; ``model`` is ready to predict."""

    folder: str
    manifest: AnyManifest
    model: Any  # a Keras model or a fitted scikit-learn estimator
    manifest_sha256: str = ""
    files: dict = field(default_factory=dict)  # the verified bytes of every file, by name

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def class_names(self) -> list[str]:
        return self.manifest.class_names

    @property
    def needs_base(self) -> bool:
        """Whether predicting needs the base's weights: a fine-tuned model holds its whole network, and
        an ensemble needs them when one of its members takes features."""
        if self.kind == "ensemble":
            return bool(self.model.needs_base)
        return self.kind != "finetuned"


def _read_bytes(path: str, limit=None) -> bytes:
    with open_regular(path, follow_symlinks=False) as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ArtifactError(f"{path} is larger than {limit} bytes; a manifest is never that large.")
    return data


def _entries(folder: str) -> dict[str, int]:
    """Return {name: st_mode} of a folder's entries, not following symlinks."""
    st = os.lstat(folder) if os.path.lexists(folder) else None
    if st is None:
        raise ArtifactError(
            f"model folder not found: {folder}. Give a folder written by `bneck train` "
            "(MODELS_DIR/NAME) or `bneck finetune`."
        )
    if not stat.S_ISDIR(os.stat(folder).st_mode):
        raise ArtifactError(
            f"{folder} is a file, not a model folder. Give the folder written by "
            "`bneck train` (MODELS_DIR/NAME) or `bneck finetune`."
        )
    with os.scandir(folder) as it:
        return {e.name: e.stat(follow_symlinks=False).st_mode for e in it}


def _legacy_hint(folder: str) -> str:
    return (
        f"Retrain it with `bneck train` (or `bneck finetune`), or, if you trust whoever made it, "
        f"convert it once with `bneck convert {folder}` (a folder holding a pickled model.joblib "
        f"also needs --trust-pickle, because loading a pickle can run any code it carries)."
    )


def read_verified(folder: str) -> VerifiedFolder:
    """Return the folder's manifest and file bytes after checking the folder is exactly what it lists.

    Raises ArtifactError for a missing folder, no manifest, an old format, a symbolic
    link, a sub-folder or a file the manifest does not list, a listed file that is
    missing, or bytes that do not match their sha256, and for a folder that changed
    while it was read (replaced by another bneck command, or deleted).
    """
    folder = os.path.abspath(os.path.expanduser(str(folder)))
    try:
        return _read_verified(folder)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ArtifactError(
            f"{folder} changed while it was read ({exc.strerror or exc}: {exc.filename}): another command may "
            "be replacing it, or it was deleted. Run the command again once that one has finished."
        ) from None


def _read_verified(folder: str) -> VerifiedFolder:
    entries = _entries(folder)
    _check_only_regular_files(folder, entries)
    if MANIFEST not in entries:
        raise ArtifactError(
            f"{folder} has no {MANIFEST}: it is not a model folder written by "
            "`bneck train` or `bneck finetune`, so nothing in it is loaded."
        )
    raw, manifest, listed = _current_manifest(folder)
    unlisted = sorted(set(entries) - set(listed) - {MANIFEST})
    if unlisted:
        raise ArtifactError(
            f"{folder} holds {', '.join(unlisted[:5])}, which its manifest does not "
            "list: the folder was changed after it was written, so it is refused. "
            "Remove the file(s), or retrain."
        )
    files = _listed_files(folder, entries, listed)
    try:
        typed = parse_manifest(manifest, f"{folder}/{MANIFEST}")
    except ManifestError as exc:
        raise ArtifactError(str(exc)) from None
    return VerifiedFolder(folder, typed, files, sha256_bytes(raw))


def _check_only_regular_files(folder: str, entries: dict[str, int]) -> None:
    """Refuse a folder holding a symbolic link or anything else that is not a regular file."""
    for name, mode in sorted(entries.items()):
        if stat.S_ISLNK(mode):
            raise ArtifactError(
                f"{folder} holds a symbolic link, {name}: model folders hold only "
                "regular files, so it is refused (a link could point anywhere)."
            )
        if not stat.S_ISREG(mode):
            raise ArtifactError(
                f"{folder} holds {name}, which is not a regular file; model folders "
                "hold only regular files, so it is refused."
            )


def _current_manifest(folder: str) -> tuple[bytes, dict, dict]:
    """Return (the manifest's bytes, its parsed JSON, its table of listed files); raises ArtifactError
    for a manifest that is not valid JSON with such a table, or one of an older bneck."""
    try:
        raw = _read_bytes(os.path.join(folder, MANIFEST), _MAX_MANIFEST_BYTES)
        manifest = json.loads(raw)
        listed = manifest["artifacts"]
        version = manifest.get("manifest_version")
        if not isinstance(listed, dict):
            raise TypeError("artifacts is not a table")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ArtifactError(f"{folder}/{MANIFEST} is not a valid manifest ({exc}).") from None
    if version != MANIFEST_VERSION:
        raise ArtifactError(
            f"{folder} was made by an older bneck (manifest version {version!r}; "
            f"this one reads {MANIFEST_VERSION}). {_legacy_hint(folder)}"
        )
    return raw, manifest, listed


def _listed_files(folder: str, entries: dict[str, int], listed: dict) -> dict[str, bytes]:
    """Return {name: bytes} of every file the manifest lists, each read once and matching its sha256."""
    files = {}
    for name, expected in sorted(listed.items()):
        if name not in entries:
            raise ArtifactError(f"{folder}: the manifest lists {name!r}, which is missing.")
        data = _read_bytes(os.path.join(folder, name))
        if sha256_bytes(data) != expected:
            raise ArtifactError(
                f"{folder}/{name} does not match its manifest (sha256 {sha256_bytes(data)[:12]}... "
                f"instead of {str(expected)[:12]}...): it was changed after training, so it is "
                "refused. Retrain with `bneck train` or restore the original file."
            )
        files[name] = data
    return files


def verified_json(verified: VerifiedFolder, name: str):
    """Parse the verified JSON file ``name`` of a folder; raises ArtifactError for one that is not JSON
    (malformed, or nested past what a parser can follow)."""
    try:
        return json.loads(verified.files[name])
    except (KeyError, ValueError, RecursionError) as exc:
        raise ArtifactError(
            f"{verified.folder}/{name} is not a JSON file bneck wrote ({type(exc).__name__}); "
            "delete the folder or rerun with --retrain."
        ) from None


def read_manifest(folder: str) -> AnyManifest:
    """Return the folder's manifest after ``read_verified``'s checks. Raises ArtifactError."""
    return read_verified(folder).manifest


def _model_bytes(verified: VerifiedFolder) -> tuple[str, bytes, str]:
    """Return (kind, model file bytes, its path) of a verified folder; raises ArtifactError."""
    manifest, folder = verified.manifest, verified.folder
    kind = manifest.kind
    if kind not in MODEL_FILES or manifest.model_file != MODEL_FILES[kind]:
        raise ArtifactError(
            f"{folder}: its manifest names the model file {manifest.model_file!r} for kind {kind!r}, "
            f"but bneck's models are {', '.join(f'{v} ({k})' for k, v in MODEL_FILES.items())}; nothing "
            f"else is loaded (a pickle never is). {_legacy_hint(folder)}"
        )
    return kind, verified.files[MODEL_FILES[kind]], os.path.join(folder, MODEL_FILES[kind])


def check_model(folder: str) -> AnyManifest:
    """Return the manifest of a model folder that loads safely (a Keras model is checked, not built;
    a scikit-learn model is loaded and probed).

    Raises ArtifactError for what ``load_classifier`` would refuse (Keras' own safe_mode aside).
    """
    return _load(folder, build_keras=False).manifest


def load_classifier(folder: str) -> LoadedClassifier:
    """Verify and load a trained model. Raises ArtifactError if anything does not match or is unsafe."""
    return _load(folder, build_keras=True)


def _load(folder: str, build_keras: bool, member_of: str = "") -> LoadedClassifier:
    """Verify ``folder``, load its model from the verified bytes (a Keras one only checked unless
    ``build_keras``) and probe what was loaded. ``member_of``: the ensemble it is loaded for (an
    ensemble is never a member, so no chain of ensembles is followed)."""
    from bneck.pipeline.model_io import UnsafeModel, check_keras, load_keras, load_sklearn

    verified = read_verified(folder)
    if verified.manifest.kind == "ensemble":  # its model is its members: each loaded with its own checks
        from bneck.pipeline.ensemble.model import load_members

        if member_of:
            raise ArtifactError(
                f"{member_of} names {verified.folder} as a member, but that folder holds an ensemble; an "
                "ensemble's members are classifiers and fine-tuned models, so it is refused."
            )
        assert isinstance(verified.manifest, EnsembleManifest)
        members = load_members(
            verified.folder, verified.manifest, lambda path: _load(path, build_keras, member_of=verified.folder)
        )
        return LoadedClassifier(verified.folder, verified.manifest, members, verified.manifest_sha256, verified.files)
    kind, data, path = _model_bytes(verified)
    loader = load_sklearn if kind == "sklearn" else load_keras if build_keras else check_keras
    try:
        model = loader(data, path)
    except UnsafeModel as exc:
        raise ArtifactError(str(exc)) from None
    loaded = LoadedClassifier(verified.folder, verified.manifest, model, verified.manifest_sha256, verified.files)
    if model is not None:
        _probe(loaded, path)
    return loaded


def _probe(clf: LoadedClassifier, where: str) -> None:
    """Refuse a loaded model that does not predict probabilities over its manifest's classes."""
    from bneck.pipeline.metrics import class_probabilities
    from bneck.pipeline.model_checks import probe

    if clf.kind == "sklearn":
        predict, shape = clf.model.predict_proba, clf.manifest.feature_shape
        classes = getattr(clf.model, "classes_", None)  # bneck trains on labels 0..C-1, in the manifest's order
        if classes is not None and list(map(str, classes)) != list(map(str, range(len(clf.class_names)))):
            raise ArtifactError(
                f"{where} does not work as a bneck model: its classes are {list(classes)[:8]!r:.80}, "
                f"not the labels 0..{len(clf.class_names) - 1} of the {len(clf.class_names)} class "
                "names of its manifest; refused."
            )
    else:
        shape = clf.model.input_shape[1:]
        if clf.kind == "keras" and tuple(shape) != tuple(clf.manifest.feature_shape):
            raise ArtifactError(
                f"{where} takes inputs of shape {tuple(shape)}, but its manifest says its "
                f"features have shape {tuple(clf.manifest.feature_shape)}; refused."
            )

        def predict(x):
            return class_probabilities(clf.model(x, training=False))

    try:
        probe(predict, shape, len(clf.class_names), where)
    except ValueError as exc:
        raise ArtifactError(f"{where} does not work as a bneck model: {exc}; refused.") from None
