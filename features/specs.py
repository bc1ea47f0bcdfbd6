"""Extractor specs: made from options (``resolve_spec``) or rebuilt from what a file, manifest
or cache entry recorded (``spec_from_record``).

Files record the extractor's key fields and, as a hint, where its weights were read
from. The weights are found again by content: the recorded path, the Keras cache or
a path the user gives, whichever holds bytes with the recorded sha256, so a moved or
renamed weights file still works and a different one never does.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .backbones import get_backbone
from .errors import ConfigError, WeightsError
from .key import DTYPES, KEY_FIELDS, POOLS, ExtractorSpec
from .weights import resolve_weights


def resolve_spec(backbone: str = "vgg16", weights: Optional[str] = "imagenet",
                 size: Optional[int] = None, layer: Optional[str] = None, pool: str = "none",
                 dtype: str = "float32", alpha: Optional[float] = None) -> ExtractorSpec:
    """Return the spec for these extractor options (weights hashed, defaults filled in).

    Raises ConfigError for a bad option and WeightsError for unavailable weights.
    """
    entry = get_backbone(backbone)
    alpha = entry.resolve_alpha(alpha)
    size = entry.validate_size(entry.default_size if size is None else size)
    if pool not in POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(POOLS)}. Received: pool={pool!r}.")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}. Received: dtype={dtype!r}.")
    resolved = resolve_weights(entry, alpha, size, weights)
    return ExtractorSpec(backbone=entry.name, alpha=alpha, weights=resolved.label,
                         weights_sha256=resolved.sha256, layer=layer or entry.default_layer,
                         pool=pool, input_size=size,
                         preprocessing=f"keras.applications.{entry.module}.preprocess_input "
                                       f"({entry.preprocessing})",
                         dtype=dtype, weights_path=resolved.path)


def spec_from_record(recorded: dict, key: str, hints: Sequence[Optional[str]] = (),
                     weights: Optional[str] = None) -> ExtractorSpec:
    """Return the ExtractorSpec ``recorded`` (key fields and ``weights`` label) describes.

    ``weights`` (a path) is the only candidate when given; otherwise the ``hints``
    (recorded paths), then the Keras cache ('imagenet') or the random init ('none').
    Raises WeightsError when no candidate has the recorded ``weights_sha256``, or
    when the rebuilt spec's key is not ``key``.
    """
    entry = get_backbone(recorded["backbone"])
    want = recorded["weights_sha256"]
    candidates = [weights] if weights else [h for h in hints if h]
    if not weights:
        candidates.append("none" if recorded.get("weights") == "none" else "imagenet")
    seen = []
    for candidate in candidates:
        try:
            resolved = resolve_weights(entry, recorded["alpha"], recorded["input_size"], candidate)
        except WeightsError:
            continue
        seen.append(f"{candidate} (sha256 {resolved.sha256[:12]}...)")
        if resolved.sha256 == want:
            spec = ExtractorSpec(**{k: recorded.get(k) for k in KEY_FIELDS}, weights=recorded["weights"],
                                 weights_path=resolved.path)
            if spec.key == key:
                return spec
            break
    raise WeightsError(
        f"the features were made with {recorded['backbone']} weights with sha256 {want[:12]}... "
        f"({recorded.get('weights')!r}), and no such file was found (tried: "
        f"{', '.join(seen) or ', '.join(map(str, candidates))}). Pass --weights PATH to that file.")
