"""Saving and loading models in formats that cannot run code, from bytes already verified.

* scikit-learn models are saved with ``skops.io`` and loaded with an explicit list of
  trusted types (``trusted_sklearn_types()``: bneck's own and the registered classifiers',
  on top of skops' own defaults: builtins, NumPy and scikit-learn's estimators). A file
  naming any other type, a function included, is refused before anything in it is built. Nothing is ever unpickled.
* Keras models (``.keras`` zip archives) are checked before Keras reads them: the
  archive holds exactly ``config.json``, ``metadata.json`` and ``model.weights.h5``;
  every object in the config is one of ``KERAS_OBJECTS`` (the layers, initializers
  and policies bneck's own models are made of: no ``Lambda``, no function, no layer
  that reads files); the weights file holds only hard links and datasets stored in
  itself. Then Keras loads it with ``safe_mode=True``, from memory.

Both loaders take the bytes that were hashed against the manifest (``artifacts``),
never a path to open again.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence

from bneck.core.errors import BneckError

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

# (module, class_name) of every object a bneck Keras model's config may hold: the
# layers of the eight backbones, the heads and the fine-tuned assembly (found by
# saving each; tests/pipeline/test_model_io.py rebuilds them and checks).
KERAS_OBJECTS = frozenset(
    [
        (None, "__keras_tensor__"),
        (None, "__tuple__"),
        ("keras", "DTypePolicy"),
        ("keras.src.models.functional", "Functional"),
    ]
    + [
        ("keras.initializers", name)
        for name in (
            "Constant",
            "GlorotNormal",
            "GlorotUniform",
            "HeNormal",
            "HeUniform",
            "Ones",
            "RandomNormal",
            "RandomUniform",
            "TruncatedNormal",
            "VarianceScaling",
            "Zeros",
        )
    ]
    + [
        ("keras.layers", name)
        for name in (
            "Activation",
            "Add",
            "AveragePooling2D",
            "BatchNormalization",
            "Concatenate",
            "Conv2D",
            "Dense",
            "DepthwiseConv2D",
            "Dropout",
            "Flatten",
            "GlobalAveragePooling2D",
            "GlobalMaxPooling2D",
            "InputLayer",
            "MaxPooling2D",
            "Multiply",
            "Normalization",
            "ReLU",
            "Rescaling",
            "Reshape",
            "SeparableConv2D",
            "ZeroPadding2D",
            "Cropping2D",  # NASNet
            "LayerNormalization",  # ConvNeXt
        )
    ]
    # What the other keras.applications families are made of (every family's smallest model is
    # fine-tuned, saved and loaded by tests/features/backbones/test_families.py): Keras' own
    # classes whose configs hold numbers only, and graph operations (`x + y`) in functional configs.
    + [
        ("keras", "Sequential"),  # ConvNeXt's downsampling blocks; their layers are checked too
        ("keras.src.applications.convnext", "LayerScale"),
        ("keras.src.applications.inception_resnet_v2", "CustomScaleLayer"),
        ("keras.src.ops.numpy", "Add"),  # ConvNeXt, MobileNetV3
        ("keras.src.ops.numpy", "Multiply"),  # MobileNetV3's hard sigmoid
    ]
)
KERAS_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
_MAX_CONFIG_BYTES = 64 << 20


# Where bneck's own types lived before everything moved under one import name: a model
# saved by bneck 0.2 names ``pipeline.training.sklearn_models.SpatialReshape``. Such a
# path is read as today's (``bneck.`` in front); the trusted list then decides as always.
# Never imported as written: that would import whatever ``pipeline`` package is on sys.path.
LEGACY_MODULE_PREFIXES = ("features.", "pipeline.")
_MAX_SCHEMA_BYTES = 64 << 20


class UnsafeModel(BneckError):
    """A model file holds something bneck does not load (code, an unknown type, a link out)."""


def current_type_paths(data: bytes, where: str) -> bytes:
    """Return skops ``data`` with type paths of an earlier release (``LEGACY_MODULE_PREFIXES``) moved
    under ``bneck.``; ``data`` itself when it names none. Raises UnsafeModel for an unreadable archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo("schema.json")
            if info.file_size > _MAX_SCHEMA_BYTES:
                raise UnsafeModel(
                    f"{where}: its schema.json would inflate to {info.file_size} bytes "
                    f"(a bneck model's is far below {_MAX_SCHEMA_BYTES}); refused."
                )
            schema = archive.read(info)
            if not any(f'"{prefix}'.encode() in schema for prefix in LEGACY_MODULE_PREFIXES):
                return data
            _check_inflation(archive.infolist(), len(data), where)  # every member is read into memory below
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


def _objects(node):
    """Yield every dict in a Keras config that names a class."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def check_keras_config(config: dict, where: str) -> None:
    """Refuse a config naming any object outside ``KERAS_OBJECTS`` (Lambda, functions, file readers)."""
    for obj in _objects(config):
        pair = (obj.get("module"), obj.get("class_name"))
        registered = obj.get("registered_name")
        if pair not in KERAS_OBJECTS or registered not in (None, obj.get("class_name")):
            raise UnsafeModel(
                f"{where} holds a {pair[1]!r} object (module {pair[0]!r}), which bneck models never "
                f"contain: it may carry code (Lambda layers, functions, custom objects) or read files, "
                f"so it is not loaded (Keras safe_mode=True is not relied on alone). Retrain with "
                f"`bneck train` / `bneck finetune`."
            )


def _check_weights_file(data: bytes, where: str) -> None:
    import h5py

    from bneck.features.featurefile.reach import H5Refused, check_self_contained

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            check_self_contained(f)
    except H5Refused as exc:
        raise UnsafeModel(f"{where}: its weights file {exc}; refused.") from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise UnsafeModel(f"{where}: its weights file cannot be read ({exc}).") from None


# Weights are float arrays: they barely compress. A member that inflates far beyond its stored
# bytes (a zip bomb: 56 MB that inflate to 12 GB) is refused before it is decompressed.
_MAX_INFLATION = 20
_MAX_MEMBER_BYTES = 4 << 30


def _check_inflation(members, archive_bytes: int, where: str) -> None:
    for info in members:
        limit = min(_MAX_MEMBER_BYTES, _MAX_INFLATION * max(info.compress_size, 1) + (1 << 20))
        if info.file_size > limit:
            raise UnsafeModel(
                f"{where}: its member {info.filename} declares {info.file_size} bytes from "
                f"{info.compress_size} stored ({archive_bytes} in the archive); a model's "
                "weights never inflate that much, so it is refused (a zip bomb)."
            )


def check_keras(data: bytes, where: str) -> None:
    """Refuse a ``.keras`` archive with other members, objects outside ``KERAS_OBJECTS``, or a
    weights file that links outside itself (UnsafeModel)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename: info for info in archive.infolist()}
        if set(members) != KERAS_MEMBERS:
            raise UnsafeModel(
                f"{where} holds {sorted(members)}; a bneck Keras model holds exactly {sorted(KERAS_MEMBERS)}. Refused."
            )
        if members["config.json"].file_size > _MAX_CONFIG_BYTES:
            raise UnsafeModel(f"{where}: its config.json declares {members['config.json'].file_size} bytes.")
        _check_inflation(members.values(), len(data), where)
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")
    except UnsafeModel:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, RecursionError) as exc:
        raise UnsafeModel(f"{where} is not a readable .keras archive ({type(exc).__name__}: {exc}).") from None
    check_keras_config(config, where)
    _check_weights_file(weights, where)


def load_keras(data: bytes, where: str):
    """Return the Keras model in ``.keras`` archive ``data`` after ``check_keras``.

    Raises UnsafeModel for what ``check_keras`` refuses or Keras' safe_mode refuses.
    """
    check_keras(data, where)
    from bneck.core.tfimport import import_tensorflow

    import_tensorflow()
    from keras.src.saving import saving_lib  # the public load_model takes paths only

    try:
        return saving_lib.load_model(io.BytesIO(data), compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - safe_mode refusing code, or a file Keras cannot read
        raise UnsafeModel(
            f"{where} was not loaded: Keras (safe_mode=True) refused it: {str(exc).split('. ')[0][:300]}."
        ) from None
