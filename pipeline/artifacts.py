"""Trained-classifier folders: what is in them, and loading them only when they are what they claim.

``MODELS_DIR/NAME/manifest.json`` records the classifier's configuration, the class
names, the extractor (key and full spec), the feature files' sha256, the metrics,
the software versions and the sha256 of every other file in the folder. Loading
checks those hashes before any file is deserialised: a joblib/pickle file can run
code when loaded, so one that does not match its manifest (or has none) is never
opened. Keras models load with ``safe_mode=True``.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from features.atomic import atomic_open, staged_folder  # noqa: F401  (staged_folder: re-exported)
from features.errors import BneckError
from features.hashing import sha256_file
from features.store import versions

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class ArtifactError(BneckError):
    """A classifier folder is missing, incomplete or does not match its manifest."""


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


def write_manifest(folder: str, body: dict) -> dict:
    """Hash every file in ``folder`` and write the manifest last; returns it."""
    files = sorted(n for n in os.listdir(folder) if n != MANIFEST and not n.startswith("."))
    manifest = {"manifest_version": MANIFEST_VERSION, **body,
                "versions": versions(),
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "artifacts": {n: sha256_file(os.path.join(folder, n)) for n in files}}
    write_json(os.path.join(folder, MANIFEST), manifest)
    return manifest


@dataclass
class LoadedClassifier:
    """A verified classifier: ``kind`` is 'keras' or 'sklearn'; ``model`` is ready to predict."""

    folder: str
    manifest: dict
    model: object

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]


def read_manifest(folder: str) -> dict:
    """Return the folder's manifest after checking every listed file's sha256.

    Raises ArtifactError naming the folder and the first file that fails.
    """
    folder = os.path.abspath(os.path.expanduser(str(folder)))
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise ArtifactError(f"{folder} has no {MANIFEST}: it is not a classifier folder written by "
                            "`bneck train`, and its files will not be loaded (pickled models "
                            "can run code when opened).")
    try:
        with open(path) as handle:
            manifest = json.load(handle)
        listed = manifest["artifacts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a valid manifest ({exc}).") from None
    for name, expected in listed.items():
        file = os.path.join(folder, name)
        if os.path.basename(name) != name or not os.path.isfile(file):
            raise ArtifactError(f"{folder}: the manifest lists {name!r}, which is missing.")
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactError(
                f"{file} does not match its manifest (sha256 {actual[:12]}... instead of "
                f"{expected[:12]}...): it was changed after training, so it is refused. "
                "Retrain with `bneck train` or restore the original file.")
    return manifest


def load_classifier(folder: str) -> LoadedClassifier:
    """Verify and load a trained classifier. Raises ArtifactError if anything does not match."""
    folder = os.path.abspath(os.path.expanduser(str(folder)))
    manifest = read_manifest(folder)
    model_file = manifest.get("model_file")
    if model_file not in manifest["artifacts"]:
        raise ArtifactError(f"{folder}: the manifest's model file {model_file!r} is not among its "
                            "hashed artifacts, so it is refused.")
    path = os.path.join(folder, model_file)
    if manifest["kind"] in ("keras", "finetuned"):
        from features.tfimport import import_tensorflow

        import_tensorflow()
        import keras

        try:
            model = keras.models.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # safe_mode refusing code, or a file Keras cannot read
            raise ArtifactError(
                f"{path} was not loaded: Keras (safe_mode=True) refused it: {str(exc).split('. ')[0]}. "
                "bneck never loads models that carry Python code (Lambda layers, custom objects); "
                "retrain with `bneck train` / `bneck finetune`.") from None
    else:
        import joblib

        model = joblib.load(path)
    return LoadedClassifier(folder, manifest, model)


def write_predictions(path: str, class_names: list[str], splits: dict) -> None:
    """Write one row per image: split, path, true class, predicted class, one probability per class.

    ``splits`` maps split -> (paths, integer labels, (n, classes) probabilities).
    """
    import numpy as np

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "path", "true", "predicted", *class_names])
        for split, (paths, labels, probs) in splits.items():
            for p, label, row in zip(paths, labels, probs):
                writer.writerow([split, p, class_names[int(label)], class_names[int(np.argmax(row))],
                                 *(f"{v:.6f}" for v in row)])


def read_predictions(path: str) -> list[dict]:
    """Read ``write_predictions``' file back as dicts (probabilities as floats)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    fixed = ("split", "path", "true", "predicted")
    return [{**{k: r[k] for k in fixed}, "probabilities": {k: float(v) for k, v in r.items() if k not in fixed}}
            for r in rows]
