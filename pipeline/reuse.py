"""Whether a stage's output folder can be reused, and if not, why it runs.

Each stage decides its own reuse (``training.reuse``, ``finetuning.reuse``), the same
from the command line, the Python API and ``bneck run``, cheapest check first, like
DVC's ``changed_stage() or changed_deps() or changed_outs()``: the manifest's recorded
options, then its inputs by sha256, then the whole folder verified and its model
checked for safe loading. The first difference found is the reason it runs again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from bneck.pipeline.manifests import MANIFEST, AnyManifest, ManifestError, parse_manifest

_MAX_MANIFEST_BYTES = 16 << 20


@dataclass(frozen=True)
class Reuse:
    """The decision: ``reused`` and, when not, ``why`` the stage runs (one line a person reads)."""

    reused: bool
    why: str


def records_its_domain(m) -> str | None:
    """Why a folder made with a validation split but without ``domain.json`` is made again (None: it has it)."""
    from bneck.pipeline.domain import DOMAIN_FILE

    made_with_validation = "validation" in (getattr(m, "feature_files", None) or getattr(m, "images", None) or {})
    if made_with_validation and DOMAIN_FILE not in (m.artifacts or {}):
        return "it records no domain for flagging out-of-domain images (an older bneck made it)"
    return None


def options_changed(old: dict, new: dict) -> str | None:
    """Return "options changed: pca 64 -> 8, epochs 50 -> 10" for the keys that differ, or None."""
    keys = [k for k in dict.fromkeys([*new, *old]) if _json(old.get(k)) != _json(new.get(k))]
    if not keys:
        return None
    return "options changed: " + ", ".join(f"{k} {_short(old.get(k))} \u2192 {_short(new.get(k))}" for k in keys)


def recorded_manifest(folder: str) -> tuple[AnyManifest | None, str]:
    """Return (the folder's manifest as recorded, "") or (None, why there is none usable).

    Cheap and unverified: the decision to reuse is final only after ``decide``'s last check.
    """
    path = os.path.join(folder, MANIFEST)
    if not os.path.lexists(folder):
        return None, "no earlier output"
    try:
        if os.path.getsize(path) > _MAX_MANIFEST_BYTES:
            return None, "its manifest is not one bneck writes"
        with open(path) as handle:
            return parse_manifest(json.load(handle), path), ""
    except (OSError, ValueError, ManifestError, RecursionError) as exc:
        return None, f"the earlier output has no usable manifest ({str(exc)[:120]})"


def decide(folder: str, checks: list[Callable[[AnyManifest], str | None]], verify: Callable[[str], object]) -> Reuse:
    """Run ``checks`` (each returns why the recorded manifest no longer fits, or None) in order, then
    ``verify(folder)`` (raises BneckError when the folder is damaged or unsafe); returns the Reuse."""
    from bneck.core.errors import BneckError

    manifest, why = recorded_manifest(folder)
    if manifest is None:
        return Reuse(False, why)
    for check in checks:
        why = check(manifest)
        if why:
            return Reuse(False, why)
    try:
        verify(folder)
    except BneckError as exc:
        return Reuse(False, f"the earlier output does not verify ({str(exc)[:160]})")
    return Reuse(True, "unchanged")


def _json(value):
    return json.loads(json.dumps(value, default=str))


def _short(value) -> str:
    if value is None:
        return "unset"
    text = json.dumps(_json(value))
    return text if len(text) <= 40 else text[:37] + "..."
