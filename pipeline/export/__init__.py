"""``bneck export``: one model a service can load without bneck.

The export takes raw uint8 RGB images of the recorded input size and returns class
probabilities; preprocessing, the base, pooling and the head are inside (``graph``).
Nothing is trusted on faith: before the folder is kept, the written file is loaded
by its format's own runtime and run on up to eight of the model's recorded test
images (seeded noise images when those are not on this machine), and its
probabilities must equal ``bneck predict``'s within ``TOLERANCE``; the figure
measured is recorded in ``bneck-export.json`` beside the model and ``labels.json``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import ParamSpec, TypeVar

import numpy as np

from bneck.core.atomic import refused_writes_as_errors
from bneck.core.errors import BneckError, ConfigError
from bneck.core.folders import check_folder, staged_folder
from bneck.pipeline.artifacts import LoadedClassifier, load_classifier, write_json
from bneck.pipeline.export.formats import ExportFormat, get_format

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # largest |probability difference| from `bneck predict` an export may show
CHECK_IMAGES = 8
METADATA = "bneck-export.json"
RESIZE = (
    "PIL: the image converted to RGB (the first frame; grayscale replicated), resized to "
    "SIZE x SIZE with Image.BILINEAR, no crop (the aspect ratio is not kept), as uint8"
)
# bneck's one decoding rule (features/images/decode.py), as a server must apply it: the function
# `bneck_input` in docs/export.md, held to the decoder for every mode by tests/pipeline/export.
DECODE = (
    "the first frame; modes I;16* shifted right by 8, mode I by 8 (by 24 when a value exceeds 65535), "
    "mode F clipped to 0..255, each then 8-bit grayscale (never Pillow's convert('RGB') of a 16-bit image, "
    "which clips); mode P through RGBA; alpha dropped; then convert('RGB')"
)

__all__ = ["ExportError", "export_model"]


class ExportError(BneckError):
    """An export that does not reproduce bneck's probabilities within the tolerance."""


def _check_images(clf: LoadedClassifier, size: int) -> tuple[np.ndarray, str]:
    """Return up to CHECK_IMAGES of the model's recorded test images (decoded as bneck does) and
    where they came from; seeded noise images where those are not readable here."""
    from bneck.features.images.decode import UnusableImage, decode_image
    from bneck.pipeline.image_splits import data_root_of, read_splits

    try:
        record = read_splits(clf.files, clf.folder)
        part = record["splits"].get("test") or next(iter(record["splits"].values()))
        root = data_root_of(record, None)
        images = [
            decode_image(os.path.join(root, p), size, sha)
            for p, sha in list(zip(part["paths"], part["sha256"]))[:CHECK_IMAGES]
        ]
        if images:
            return np.stack(images), f"{len(images)} of the model's recorded images"
    except (BneckError, UnusableImage, OSError, StopIteration):
        pass
    noise = np.random.default_rng(0).integers(0, 256, (CHECK_IMAGES, size, size, 3), dtype=np.uint8)
    return noise, f"{CHECK_IMAGES} seeded noise images (the recorded images are not readable here)"


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _arguments_checked(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Bind each call to ``function``'s parameters before anything runs: an unknown keyword, a missing
    or doubled argument, or both ``format`` and ``fmt`` (its old name), is a ConfigError naming the
    parameters it takes, in one paragraph (as ``takes_options`` says it for the stages), never a TypeError."""
    signature = inspect.signature(function)
    accepted = ", ".join(name for name in signature.parameters if name != "fmt")

    @functools.wraps(function)  # help() and inspect.signature follow __wrapped__: the real parameters
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            given = signature.bind(*args, **kwargs).arguments
        except TypeError as exc:
            raise ConfigError(
                f"bneck.export() {exc}; its parameters are {accepted} (and fmt, the old name of format)."
            ) from None
        if "format" in given and "fmt" in given:
            raise ConfigError(
                f"bneck.export() takes the format once, as format= (fmt= is its old name), not "
                f"both. Received: format={given['format']!r}, fmt={given['fmt']!r}."
            )
        return function(*args, **kwargs)

    return checked


@_arguments_checked
def export_model(
    model_dir: str,
    out: str,
    format: str = "keras",
    weights: str | None = None,
    verbose: bool = True,
    *,
    fmt: str | None = None,
) -> dict:
    """Export the model in ``model_dir`` as ``format`` into the folder ``out``; returns its metadata.

    ``format`` (the command's --format) is any registered format
    (``bneck.pipeline.export.formats.list_formats()``); ``fmt`` is its old name, still taken
    (the third positional argument is the format under either name). Raises ConfigError for
    an unknown parameter, both ``format`` and ``fmt``, an unknown format, a format whose
    packages are not installed or a bad --out, all before any model is read; ArtifactError
    for a model folder that does not verify, FoldError for a scikit-learn model that is
    not layers, ExportError when the written model does not reproduce ``bneck predict``.
    """
    from bneck.pipeline.export.graph import deployable
    from bneck.pipeline.predict import probability_function

    fmt = format if fmt is None else fmt
    form = get_format(fmt)  # ConfigError before any work: unknown, or its runtime not installed
    check_folder(out, "export", inputs=[model_dir])
    clf = load_classifier(model_dir)
    spec = clf.manifest.extractor_spec(weights, need_weights=clf.needs_base)  # a fine-tuned network is saved whole
    model = deployable(clf, spec)  # FoldError here, before any folder is made
    with staged_folder(out, "export", inputs=[model_dir]) as folder:  # a place we cannot write: said now
        images, source = _check_images(clf, spec.input_size)
        reference = probability_function(clf, spec)(images)
        path = os.path.join(folder, form.path)
        with refused_writes_as_errors(out):  # a full disk or a file size limit: one paragraph naming --out
            form.write(model, path)
        got = form.runner(path)(images)  # the written file, read back by the format's own runtime
        diff = (
            float(np.max(np.abs(np.asarray(got, np.float64) - reference)))
            if got.shape == reference.shape
            else float("inf")
        )
        if not diff <= TOLERANCE:
            raise ExportError(
                f"the {fmt} export of {model_dir} does not reproduce `bneck predict`: on {source} "
                f"its probabilities differ by up to {diff:.3g} (allowed {TOLERANCE:g}, output shape "
                f"{got.shape} vs {reference.shape}). Nothing was written; try --format keras."
            )
        write_json(os.path.join(folder, "labels.json"), list(clf.class_names))
        metadata = _metadata(
            clf, spec, form, _hashes(folder), {"images": source, "max_abs_difference": diff, "tolerance": TOLERANCE}
        )
        write_json(os.path.join(folder, METADATA), metadata)
    if verbose:
        log.info(summary(model_dir, out, metadata))
    return metadata


def summary(model_dir: str, out: str, metadata: dict) -> str:
    """Return the line that says what an export wrote and how it was checked."""
    check = metadata["check"]
    return (
        f"exported {model_dir} as {metadata['format']}: {os.path.join(out, metadata['model'])} (+ labels.json, "
        f"{METADATA}); checked on {check['images']}: max |difference| from bneck predict "
        f"{check['max_abs_difference']:.2g}"
    )


def _hashes(folder: str) -> dict:
    """{relative path: sha256} of every file written so far (the marker aside)."""
    from bneck.core.folders import MARKER
    from bneck.core.hashing import sha256_file

    found = {}
    for current, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(current, name)
            relative = os.path.relpath(path, folder)
            if relative != MARKER:
                found[relative] = sha256_file(path)
    return dict(sorted(found.items()))


def _metadata(clf: LoadedClassifier, spec, form: ExportFormat, files: dict, check: dict) -> dict:
    from bneck.core.versions import versions

    size, names = spec.input_size, list(clf.class_names)
    return {
        "format": form.name,
        "model": form.path,
        "files": [*files, METADATA],
        "sha256": files,
        "class_names": names,
        "input": {
            "name": "image",
            "shape": [None, size, size, 3],
            "dtype": "uint8",
            "channels": "RGB",
            "decode": DECODE,
            "resize": RESIZE.replace("SIZE", str(size)),
            "preprocessing": f"inside the model ({spec.backbone}: {clf.manifest.extractor.get('preprocessing')})",
        },
        "output": {"shape": [None, len(names)], "meaning": "class probabilities, in the order of class_names"},
        "runtime_settings": dict(form.runtime_settings),
        "check": {**check, "against": "bneck predict on the same images"},
        "source": {
            "model_dir": os.path.abspath(clf.folder),
            "classifier": clf.manifest.classifier,
            "kind": clf.kind,
            "manifest_sha256": clf.manifest_sha256,
            "test_accuracy": _test_accuracy(clf.manifest.metrics),
        },
        "extractor": clf.manifest.extractor,
        "bneck_version": versions()["bneck_version"],
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _test_accuracy(metrics) -> float | None:
    test = metrics.get("test") if isinstance(metrics, dict) else None
    return test.get("accuracy") if isinstance(test, dict) else None
