"""Extractor specs: made from options (``resolve_spec``) or rebuilt from what a file, manifest
or cache entry recorded (``spec_from_record``).

Files record the extractor's key fields and, as a hint, where its weights were read
from. The weights are found again by content: the recorded path, the Keras cache or
a path the user gives, whichever holds bytes with the recorded sha256, so a moved or
renamed weights file still works and a different one never does.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from bneck.core.errors import ConfigError, FeatureFileError, WeightsError
from bneck.features.backbones.model_file import (
    MODEL_FILE,
    NO_PREPROCESSING,
    is_model_file,
    model_file_entry,
    preprocessing_text,
)
from bneck.features.backbones.registry import BACKBONES, Backbone, get_backbone
from bneck.features.backbones.spec import DTYPES, KEY_FIELDS, POOLS, RECORDED_DTYPES, ExtractorSpec
from bneck.features.backbones.weights import ResolvedWeights, resolve_weights


def resolve_spec(
    backbone: str = "vgg16",
    weights: str | None = "imagenet",
    size: int | None = None,
    layer: str | None = None,
    pool: str = "none",
    dtype: str = "float32",
    alpha: float | None = None,
    preprocess: str | None = None,
) -> ExtractorSpec:
    """Return the spec for these extractor options (weights hashed, defaults filled in).

    ``backbone`` is a registered name or the path of a ``.keras`` model file (``model_file``), which
    ``preprocess`` (a family's module, or 'none') applies to. Raises ConfigError for a bad option,
    UnsafeModel for a model file holding code, and WeightsError for unavailable weights.
    """
    resolved = None
    if is_model_file(backbone):
        entry, resolved = _model_file(backbone, weights, preprocess)
    elif preprocess is not None:
        raise ConfigError(
            f"--preprocess applies to a model file given as --backbone PATH; {backbone!r} applies its own "
            f"(keras.applications.{get_backbone(backbone).module}.preprocess_input). "
            f"Received: preprocess={preprocess!r}."
        )
    else:
        entry = get_backbone(backbone)
    alpha = entry.resolve_alpha(alpha)
    size = entry.validate_size(entry.default_size if size is None else size)
    if pool not in POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(POOLS)}. Received: pool={pool!r}.")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}. Received: dtype={dtype!r}.")
    if resolved is None:
        resolved = resolve_weights(entry, alpha, size, weights)
    preprocessing = (
        preprocessing_text(entry.module)
        if entry.name == MODEL_FILE
        else f"keras.applications.{entry.module}.preprocess_input ({entry.preprocessing})"
    )
    return ExtractorSpec(
        backbone=entry.name,
        alpha=alpha,
        weights=resolved.label,
        weights_sha256=resolved.sha256,
        layer=layer or entry.default_layer,
        pool=pool,
        input_size=size,
        preprocessing=preprocessing,
        dtype=dtype,
        weights_path=resolved.path,
    )


def _model_file(path: str, weights, preprocess) -> tuple:
    """The entry and 'weights' of ``--backbone PATH``: the file carries its weights, keyed by its sha256."""
    if weights is not None and str(weights).lower() != "imagenet":
        raise ConfigError(
            f"--weights applies to keras.applications backbones; the model file {path} carries its own "
            f"weights (leave --weights out). Received: weights={weights!r}."
        )
    entry = model_file_entry(path, preprocess)
    return entry, ResolvedWeights(os.path.basename(entry.path), entry.sha256, entry.path)


# What a recorded extractor may hold, field by field (``ExtractorSpec.describe()`` writes it).
_RECORD_TYPES = {
    "backbone": str,
    "alpha": (float, type(None)),
    "weights": str,
    "weights_sha256": str,
    "layer": str,
    "pool": str,
    "input_size": int,
    "preprocessing": str,
    "interpolation": str,
    "dtype": str,
    "augmentation": (str, type(None)),
    "quantization": (str, type(None)),
    "schema_version": int,
}
WEIGHTS_SUFFIXES = (".h5", ".keras")


def check_record(recorded, where: str) -> dict:
    """Return ``recorded`` (an extractor as a file, manifest or cache entry records it) after checking
    every field's type and range. Raises FeatureFileError naming ``where`` and the field."""

    def bad(field, allowed):
        value = recorded.get(field) if isinstance(recorded, dict) else recorded
        return FeatureFileError(
            f"{where} records an extractor bneck never writes: {field} must be {allowed}. "
            f"Received: {str(value)[:80]!r}. Extract the features again."
        )

    if not isinstance(recorded, dict):
        raise bad("the extractor", "a table")
    for field, kind in _RECORD_TYPES.items():
        value = recorded.get(field)
        if field in ("alpha", "augmentation", "quantization") and field not in recorded:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise bad(field, f"of type {getattr(kind, '__name__', 'str or unset')}")
    if recorded["backbone"] not in BACKBONES and recorded["backbone"] != MODEL_FILE:
        raise bad("backbone", f"{MODEL_FILE!r} or one of {', '.join(BACKBONES)}")
    if recorded["pool"] not in POOLS:
        raise bad("pool", f"one of {', '.join(POOLS)}")
    if recorded["dtype"] not in RECORDED_DTYPES:
        raise bad("dtype", f"one of {', '.join(RECORDED_DTYPES)}")
    try:
        _record_entry(recorded["backbone"]).validate_size(recorded["input_size"])
    except ConfigError as exc:
        raise bad("input_size", str(exc).split(" must be ", 1)[-1].split(". Received")[0]) from None
    return recorded


def _record_entry(backbone: str) -> Backbone:
    """The entry a record's weights are resolved with: a registered backbone's, or any model file's
    (found by content like a weights file: it has no ImageNet file and no size of its own here)."""
    if backbone != MODEL_FILE:
        return get_backbone(backbone)
    return Backbone(MODEL_FILE, "", "", NO_PREPROCESSING, 224, 1, "", (), lambda alpha, size: None, "")


def _usable_hint(path) -> bool:
    """A recorded weights path is only a hint, tried when it names a weights file (.h5 or .keras) that
    is a non-empty regular file: a handed folder cannot make bneck read ``/etc/shadow`` or ``/proc/kmsg``."""
    if not isinstance(path, str) or not path.endswith(WEIGHTS_SUFFIXES):
        return False
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


def spec_from_record(
    recorded: dict,
    key: str,
    hints: Sequence[str | None] = (),
    weights: str | None = None,
    where: str = "the record",
    need_weights: bool = True,
) -> ExtractorSpec:
    """Return the ExtractorSpec ``recorded`` (key fields and ``weights`` label) describes.

    ``weights`` (a path) is the only candidate when given; otherwise the ``hints``
    (recorded paths of weights files), then the Keras cache ('imagenet') or the random
    init ('none'). Without ``need_weights`` (a fine-tuned network, saved whole) no weights are looked
    for: ``weights_path`` is None. Raises FeatureFileError for a record bneck never writes, WeightsError
    when no candidate has the recorded ``weights_sha256``, or when the rebuilt spec's key
    is not ``key``.
    """
    recorded = check_record(recorded, where)
    if not need_weights:  # a network saved whole (fine-tuned): the spec says how its inputs are made
        spec = ExtractorSpec(**{k: recorded.get(k) for k in KEY_FIELDS}, weights=recorded["weights"])
        if spec.key != key:
            raise FeatureFileError(
                f"{where} records an extractor whose fields do not make its key ({key[:12]}...); it was "
                "altered. Make the model again."
            )
        return spec
    entry = _record_entry(recorded["backbone"])
    want = recorded["weights_sha256"]
    candidates = [weights] if weights else [h for h in hints if _usable_hint(h)]
    if not weights:
        candidates.append("none" if recorded.get("weights") == "none" else "imagenet")
    tried = []
    for candidate in candidates:
        tried.append(str(candidate))
        try:
            resolved = resolve_weights(entry, recorded.get("alpha"), recorded["input_size"], candidate)
        except WeightsError:
            continue
        if resolved.sha256 != want:  # a file that is there, but another one: say so
            tried[-1] += f" (there, but of sha256 {resolved.sha256[:12]}...)"
        if resolved.sha256 == want:
            spec = ExtractorSpec(
                **{k: recorded.get(k) for k in KEY_FIELDS}, weights=recorded["weights"], weights_path=resolved.path
            )
            if spec.key == key:
                return spec
            break
    what = (
        f"the model file {recorded.get('weights')!r}"
        if recorded["backbone"] == MODEL_FILE
        else f"{recorded['backbone']} weights {recorded.get('weights')!r}"
    )
    raise WeightsError(
        f"the features were made with {what} of sha256 {want[:12]}..., and no such file was found "
        f"(tried: {', '.join(tried)}{_recorded_hint(hints, tried, bool(weights))}). "
        "Pass --weights PATH to that file (a moved or renamed copy works: it is found by content)."
    )


def _recorded_hint(hints, tried: list[str], given: bool) -> str:
    """Where the weights were recorded, said truly: gone, or there (then --weights is what was in the way)."""
    import os

    last_seen = [str(h) for h in hints if isinstance(h, str) and h and not any(t.startswith(str(h)) for t in tried)]
    if not last_seen:
        return ""
    if given and os.path.isfile(last_seen[0]):
        return f"; recorded at {last_seen[0]}, which is there: leave --weights out to use it"
    return f"; recorded at {last_seen[0]}, no longer there"
