"""Saving and loading models in formats that cannot run code, from bytes already verified.

* scikit-learn models are saved with ``skops.io`` and loaded with an explicit list of
  trusted types (``trusted_sklearn_types()``: bneck's own and the registered classifiers',
  on top of skops' own defaults: builtins, NumPy and scikit-learn's estimators). A file
  naming any other type, a function included, is refused before anything in it is built. Nothing is ever unpickled.
* Keras models (``.keras`` zip archives) are checked before Keras reads them, by the
  rules a user's own backbone file is checked by (``features.backbones.keras_archive``,
  whose names are re-exported here): no ``Lambda``, no function, no custom object, no
  layer that reads files, no link out of the weights file. Then Keras loads it with
  ``safe_mode=True``, from memory.

Both loaders take the bytes that were hashed against the manifest (``artifacts``),
never a path to open again.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence

from bneck.features.backbones.keras_archive import (  # noqa: F401 - the Keras half, re-exported
    KERAS_MEMBERS,
    KERAS_OBJECTS,
    UnsafeModel,
    check_inflation,
    check_keras,
    check_keras_config,
    load_keras,
)

# Types skops must find in a bneck scikit-learn model besides its own default-trusted
# ones: bneck's own, and those each registered classifier's model holds (its registry
# entry's ``skops_types``, found with ``skops.io.get_untrusted_types``;
# tests/pipeline/test_model_io.py keeps the lists honest). Nothing else is trusted.
BNECK_SKLEARN_TYPES = (
    "bneck.pipeline.training.sklearn_models.SpatialReshape",
    "bneck.pipeline.training.sklearn_models.StreamedLinear",
)


def trusted_sklearn_types() -> tuple[str, ...]:
    """Return the types a skops file may name beyond skops' defaults: ``BNECK_SKLEARN_TYPES`` and the
    union of the registered classifiers' ``skops_types``, sorted."""
    from bneck.pipeline.training.classifiers import registered_skops_types

    return tuple(sorted(set(BNECK_SKLEARN_TYPES) | registered_skops_types()))


class _TrustedTypes(Sequence):
    """``trusted_sklearn_types()`` read at each use: a classifier registered later is trusted too."""

    def __getitem__(self, index):
        return trusted_sklearn_types()[index]

    def __len__(self) -> int:
        return len(trusted_sklearn_types())

    def __iter__(self):
        return iter(trusted_sklearn_types())

    def __repr__(self) -> str:
        return repr(trusted_sklearn_types())


TRUSTED_SKLEARN_TYPES = _TrustedTypes()


# Where bneck's own types lived before everything moved under one import name: a model
# saved by bneck 0.2 names ``pipeline.training.sklearn_models.SpatialReshape``. Such a
# path is read as today's (``bneck.`` in front); the trusted list then decides as always.
# Never imported as written: that would import whatever ``pipeline`` package is on sys.path.
LEGACY_MODULE_PREFIXES = ("features.", "pipeline.")
_MAX_SCHEMA_BYTES = 64 << 20


def current_type_paths(data: bytes, where: str) -> bytes:
    """Return skops ``data`` with type paths of an earlier release (``LEGACY_MODULE_PREFIXES``) moved
    under ``bneck.``; ``data`` itself when it names none. Raises UnsafeModel for an unreadable archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_inflation(archive.infolist(), len(data), where)  # skops reads members whole: no zip bomb
            info = archive.getinfo("schema.json")
            if info.file_size > _MAX_SCHEMA_BYTES:
                raise UnsafeModel(
                    f"{where}: its schema.json would inflate to {info.file_size} bytes "
                    f"(a bneck model's is far below {_MAX_SCHEMA_BYTES}); refused."
                )
            schema = archive.read(info)
            if not any(f'"{prefix}'.encode() in schema for prefix in LEGACY_MODULE_PREFIXES):
                return data
            members = {i.filename: archive.read(i) for i in archive.infolist() if i.filename != "schema.json"}
        renamed = json.dumps(_renamed(json.loads(schema))).encode()
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, RecursionError) as exc:
        raise UnsafeModel(f"{where} is not a readable skops file ({type(exc).__name__}: {str(exc)[:200]}).") from None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", renamed)
        for name, member in members.items():
            archive.writestr(name, member)
    return out.getvalue()


def _renamed(node):
    """Return a skops schema node with every legacy ``__module__`` moved under ``bneck.``."""
    if isinstance(node, dict):
        out = {key: _renamed(value) for key, value in node.items()}
        module = out.get("__module__")
        if isinstance(module, str) and module.startswith(LEGACY_MODULE_PREFIXES):
            out["__module__"] = "bneck." + module
        return out
    if isinstance(node, list):
        return [_renamed(value) for value in node]
    return node


def save_sklearn(model, path: str) -> None:
    """Save a scikit-learn model with skops; raises RuntimeError if it holds a type not trusted on load."""
    import skops.io as sio

    data = sio.dumps(model)
    strange = sorted(set(sio.get_untrusted_types(data=data)) - set(trusted_sklearn_types()))
    if strange:  # a bneck bug, not a user's mistake: the model could not be loaded back
        raise RuntimeError(
            f"cannot save {type(model).__name__}: it holds types that loading does not "
            f"trust: {', '.join(strange)} (add them to its classifier's registry entry, "
            "skops_types, if safe)"
        )
    with open(path, "wb") as handle:
        handle.write(data)


def check_sklearn(data: bytes, where: str) -> None:
    """Refuse skops ``data`` naming a type outside skops' defaults and ``trusted_sklearn_types()``
    (UnsafeModel), before anything in it is built."""
    import skops.io as sio

    try:
        strange = sorted(set(sio.get_untrusted_types(data=data)) - set(trusted_sklearn_types()))
    except Exception as exc:  # noqa: BLE001 - any malformed file is one clear refusal
        raise UnsafeModel(f"{where} is not a readable skops file ({type(exc).__name__}: {str(exc)[:200]}).") from None
    if strange:
        raise UnsafeModel(
            f"{where} names types bneck does not load: {', '.join(strange)}. A bneck "
            "scikit-learn model holds only scikit-learn, NumPy and bneck's own types, and those "
            "its registered classifier declares; this file was made elsewhere or altered. "
            "Retrain with `bneck train`."
        )


def load_sklearn(data: bytes, where: str):
    """Return the scikit-learn model in skops ``data``; raises UnsafeModel for untrusted types or junk."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    from bneck.pipeline.model_checks import check_fitted

    data = current_type_paths(data, where)
    trusted = list(trusted_sklearn_types())  # one reading for the check and the load
    check_sklearn(data, where)
    try:
        model = sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException as exc:
        raise UnsafeModel(f"{where} names types bneck does not load ({exc}).") from None
    except Exception as exc:  # noqa: BLE001 - any malformed file is one clear refusal
        raise UnsafeModel(f"{where} is not a readable skops file ({type(exc).__name__}: {str(exc)[:200]}).") from None
    try:
        check_fitted(model)
    except (ValueError, AttributeError, KeyError, TypeError, IndexError) as exc:
        raise UnsafeModel(
            f"{where} holds a model whose fitted arrays do not fit together ({exc}); "
            "scikit-learn's compiled code would read outside them, so it is refused. "
            "Retrain with `bneck train`."
        ) from None
    return model
