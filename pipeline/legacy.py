"""``bneck convert``: turn a model folder of an older bneck into today's format, once.

Older folders stored scikit-learn models as pickles (``model.joblib``), and loading a
pickle runs whatever code it carries, so bneck no longer loads them. ``convert`` is
the one place that may, and only with ``trust_pickle=True`` (``--trust-pickle``):
the user's statement that they trust whoever made the folder. The model is then
saved as a skops file, and the new folder is written beside the old one (the old
one is never changed or deleted).
"""

from __future__ import annotations

import json
import os

from bneck.core.files import open_regular
from bneck.core.hashing import sha256_bytes
from bneck.pipeline.artifacts import write_manifest
from bneck.pipeline.manifests import MANIFEST, MANIFEST_VERSION, MODEL_FILES, AnyManifest, ArtifactError, parse_manifest

_COPIED = (
    "metrics.json",
    "history.csv",
    "curves.png",
    "confusion_validation.png",
    "confusion_test.png",
    "head.weights.h5",
    "predictions.csv",
    "model.keras",
)


def _old_files(folder: str) -> tuple[dict, dict[str, bytes]]:
    """Return (manifest, {name: bytes}) of an old folder, every listed file matching its sha256."""
    try:
        with open_regular(os.path.join(folder, MANIFEST), follow_symlinks=False) as handle:
            manifest = json.load(handle)
        listed = dict(manifest["artifacts"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ArtifactError(f"{folder} has no readable {MANIFEST} ({exc}); there is nothing to convert.") from None
    files = {}
    for name, expected in listed.items():
        if os.path.basename(name) != name:
            raise ArtifactError(f"{folder}: its manifest lists {name!r}, which is not a file of the folder.")
        try:
            with open_regular(os.path.join(folder, name), follow_symlinks=False) as handle:
                data = handle.read()
        except OSError as exc:
            raise ArtifactError(f"{folder}/{name}: {exc.strerror or exc}.") from None
        if sha256_bytes(data) != expected:
            raise ArtifactError(f"{folder}/{name} does not match its manifest; not converted.")
        files[name] = data
    return manifest, files


def _convertible_kind(folder: str, manifest: dict, files: dict[str, bytes], trust_pickle: bool) -> str:
    """Return the model kind of an old folder that ``convert`` may convert; raises ArtifactError for a
    folder that is no bneck model, is already in today's format, lacks its model file, or holds a pickle
    that ``trust_pickle`` does not allow to load."""
    kind = manifest.get("kind")
    if kind not in MODEL_FILES:
        raise ArtifactError(f"{folder}: its manifest names kind {kind!r}, not a bneck model.")
    if manifest.get("manifest_version") == MANIFEST_VERSION:
        raise ArtifactError(
            f"{folder} is already in today's format (manifest version {MANIFEST_VERSION}); there is nothing to convert."
        )
    if (kind == "sklearn") != ("model.joblib" in files) or (kind != "sklearn" and "model.keras" not in files):
        raise ArtifactError(
            f"{folder} does not hold the model file its kind {kind!r} needs "
            "(model.joblib or model.keras, listed in its manifest)."
        )
    if kind == "sklearn" and not trust_pickle:
        raise ArtifactError(
            f"{folder} holds a pickled scikit-learn model (model.joblib). Loading a pickle runs any code "
            f"it carries, so bneck converts it only when you say you trust whoever made the folder: "
            f"`bneck convert {folder} --trust-pickle`. Otherwise retrain it with `bneck train`."
        )
    return kind


def _converted_manifest(folder: str, manifest: dict, kind: str) -> AnyManifest:
    """Return the old manifest in today's form (checked, not yet written), recording where it came from."""
    body = {k: v for k, v in manifest.items() if k not in ("artifacts", "versions", "created_utc", "manifest_version")}
    body.update(
        model_file=MODEL_FILES[kind],
        converted_from={
            "folder": folder,
            "manifest_version": manifest.get("manifest_version"),
            "trusted_pickle": kind == "sklearn",
        },
    )
    return parse_manifest(body, f"{folder}/{MANIFEST}")


def convert(folder: str, out: str | None = None, trust_pickle: bool = False) -> str:
    """Write ``folder`` (an older bneck model folder) in today's format to ``out``; returns ``out``.

    Raises ArtifactError when it holds a pickle and ``trust_pickle`` is False, or
    does not match its own manifest; OutputError for an ``out`` bneck may not write.
    """
    from bneck.core.folders import staged_folder
    from bneck.pipeline.model_io import UnsafeModel, load_keras, save_sklearn

    folder = os.path.abspath(os.path.expanduser(str(folder)))
    out = os.path.abspath(os.path.expanduser(str(out))) if out else folder.rstrip(os.sep) + "-converted"
    manifest, files = _old_files(folder)
    kind = _convertible_kind(folder, manifest, files, trust_pickle)
    typed = _converted_manifest(folder, manifest, kind)  # before anything is loaded
    with staged_folder(
        out, "classifier" if kind != "finetuned" else "finetuned", inputs=[folder], option="--out"
    ) as staging:
        for name in _COPIED:
            if name in files:
                with open(os.path.join(staging, name), "wb") as handle:
                    handle.write(files[name])
        if kind == "sklearn":
            import io

            import joblib

            # The one unpickling in bneck: the user passed --trust-pickle for this folder.
            save_sklearn(joblib.load(io.BytesIO(files["model.joblib"])), os.path.join(staging, "model.skops"))
        else:
            try:
                load_keras(files["model.keras"], os.path.join(folder, "model.keras"))  # refuses code
            except UnsafeModel as exc:
                raise ArtifactError(str(exc)) from None
        write_manifest(staging, typed)
    return out
