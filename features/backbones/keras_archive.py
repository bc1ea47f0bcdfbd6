"""Reading ``.keras`` archives that cannot run code: bneck's own models and the user's own backbones.

An archive is checked before Keras reads it: it holds exactly ``config.json``,
``metadata.json`` and ``model.weights.h5``; every object in the config is on a fixed
list of Keras' own classes whose configs hold numbers and names only (no ``Lambda``, no
function, no custom object, no layer that reads files); the weights file holds only hard
links and datasets stored in itself; no member inflates like a zip bomb. Then Keras loads
it with ``safe_mode=True``, from memory, from the bytes that were checked.

The list is one for every Keras file bneck reads: what the 40 ``keras.applications``
models, bneck's heads and fine-tuned assemblies are made of, and the built-in layers a
user's own image model may hold (``IMAGE_MODEL_LAYERS``).
"""

from __future__ import annotations

import io
import json
import zipfile

from bneck.core.errors import BneckError

_INITIALIZERS = (
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
)
# Built-in layers whose configs hold numbers and names only: what keras.applications, bneck's heads
# and a user's own image model are made of. Not here, on purpose: Lambda (code), TFSMLayer,
# TorchModuleWrapper, JaxLayer, FlaxLayer (code or files), the lookup and text layers (vocabulary
# files), and the random augmentation layers (no part of a feature extractor).
IMAGE_MODEL_LAYERS = (
    "Activation",
    "AdaptiveAveragePooling2D",
    "AdaptiveMaxPooling2D",
    "Add",
    "Average",
    "AveragePooling2D",
    "BatchNormalization",
    "CenterCrop",
    "Concatenate",
    "Conv2D",
    "Conv2DTranspose",
    "Cropping2D",
    "Dense",
    "DepthwiseConv2D",
    "Dot",
    "Dropout",
    "ELU",
    "EinsumDense",
    "Flatten",
    "GaussianDropout",
    "GaussianNoise",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "GroupNormalization",
    "Identity",
    "InputLayer",
    "LayerNormalization",
    "LeakyReLU",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "MultiHeadAttention",
    "Multiply",
    "Normalization",
    "PReLU",
    "Permute",
    "RMSNormalization",
    "ReLU",
    "Rescaling",
    "Reshape",
    "Resizing",
    "SeparableConv2D",
    "Softmax",
    "SpatialDropout2D",
    "Subtract",
    "UnitNormalization",
    "UpSampling2D",
    "ZeroPadding2D",
)
# Graph operations in functional configs (``x + y`` is ``keras.src.ops.numpy.Add``): these modules'
# operations take tensors and numbers only (the ones that take functions live in ``ops.core``).
OPERATION_MODULES = ("keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.math", "keras.src.ops.image")

KERAS_OBJECTS = frozenset(
    [
        (None, "__keras_tensor__"),
        (None, "__tuple__"),
        ("keras", "DTypePolicy"),
        ("keras.src.models.functional", "Functional"),
        ("keras", "Sequential"),  # ConvNeXt's downsampling blocks; their layers are checked too
        ("keras.src.ops.numpy", "Add"),  # ConvNeXt, MobileNetV3 (known without importing Keras)
        ("keras.src.ops.numpy", "Multiply"),  # MobileNetV3's hard sigmoid
        ("keras.src.applications.convnext", "LayerScale"),
        ("keras.src.applications.inception_resnet_v2", "CustomScaleLayer"),
    ]
    + [("keras.initializers", name) for name in _INITIALIZERS]
    + [("keras.regularizers", name) for name in ("L1", "L2", "L1L2")]
    + [("keras.constraints", name) for name in ("MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm")]
    + [("keras.layers", name) for name in IMAGE_MODEL_LAYERS]
)
KERAS_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
_MAX_CONFIG_BYTES = 64 << 20
# Weights are float arrays: they barely compress. A member that inflates far beyond its stored
# bytes (a zip bomb: 56 MB that inflate to 12 GB) is refused before it is decompressed.
_MAX_INFLATION = 20
_MAX_MEMBER_BYTES = 4 << 30


class UnsafeModel(BneckError):
    """A model file holds something bneck does not load (code, an unknown type, a link out)."""


# A Keras model's config nests about 11 levels deep (a fine-tuned assembly about twice that); deeper is
# refused before Keras' own recursive reader could fail half-way through a run.
MAX_CONFIG_DEPTH = 100
# Sizes a layer's config declares, each allocated when Keras builds it (before any weight is read):
# widths (units, filters, heads) up to 16384, windows (kernels, pools, strides, upsampling) up to 64,
# image sides up to 1024 (bneck's largest input). Keras' own models stay far inside.
_WIDTH_KEYS = ("units", "filters", "num_heads", "key_dim", "value_dim", "output_dim", "input_dim", "groups")
_WINDOW_KEYS = ("kernel_size", "pool_size", "strides", "size", "dilation_rate", "depth_multiplier", "output_size")
_MAX_WIDTH, _MAX_WINDOW, _MAX_SIDE = 16384, 64, 1024


def _objects(node, where: str, depth: int = 0):
    """Yield every dict in a Keras config that names a class; UnsafeModel past ``MAX_CONFIG_DEPTH``."""
    if depth > MAX_CONFIG_DEPTH:
        raise UnsafeModel(f"{where}: its config nests more than {MAX_CONFIG_DEPTH} levels deep; refused.")
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _objects(value, where, depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value, where, depth + 1)


def _check_declared_sizes(obj: dict, where: str) -> None:
    """Refuse a layer config declaring a width, window or image side beyond what any image model needs."""
    config = obj.get("config")
    if not isinstance(config, dict):
        return
    limits = {key: _MAX_WIDTH for key in _WIDTH_KEYS} | {key: _MAX_WINDOW for key in _WINDOW_KEYS}
    limits |= {"batch_shape": _MAX_WIDTH, "target_shape": _MAX_WIDTH}
    for key, limit in limits.items():
        value = config.get(key)
        numbers = value if isinstance(value, list) else [value]
        if key == "batch_shape" and isinstance(value, list) and len(value) == 4:
            numbers, limit = value[1:3], _MAX_SIDE  # the image sides; the channels are a width
        if any(isinstance(n, int) and not isinstance(n, bool) and n > limit for n in numbers):
            raise UnsafeModel(
                f"{where}: its {obj.get('class_name')!r} layer declares {key} = {value!r}, beyond {limit}; Keras "
                "would allocate it before reading any weight, so it is refused (no image model needs that much)."
            )


def _is_operation(module, class_name) -> bool:
    """Whether ``module.class_name`` is one of Keras' tensor operations (``OPERATION_MODULES``)."""
    if module not in OPERATION_MODULES or not isinstance(class_name, str) or not class_name.isidentifier():
        return False
    import importlib

    from keras.src.ops.operation import Operation

    found = getattr(importlib.import_module(module), class_name, None)
    return isinstance(found, type) and issubclass(found, Operation) and found.__module__ == module


def check_keras_config(config: dict, where: str) -> None:
    """Refuse a config naming any object outside ``KERAS_OBJECTS`` and Keras' tensor operations
    (Lambda, functions, custom objects, file readers) with UnsafeModel."""
    for obj in _objects(config, where):
        pair = (obj.get("module"), obj.get("class_name"))
        registered = obj.get("registered_name")
        texts = all(isinstance(v, str | None) for v in (*pair, registered))
        known = texts and (pair in KERAS_OBJECTS or _is_operation(*pair))
        if not known or registered not in (None, obj.get("class_name")):
            raise UnsafeModel(
                f"{where} holds a {pair[1]!r} object (module {pair[0]!r}), which bneck does not load: it "
                f"may carry code (Lambda layers, functions, custom objects) or read files (Keras safe_mode=True "
                f"is not relied on alone). A model bneck loads holds Keras' own layers only: "
                f"{', '.join(IMAGE_MODEL_LAYERS)}, and keras.applications' layers. Rebuild it from those, "
                f"or retrain with `bneck train` / `bneck finetune`."
            )
        _check_declared_sizes(obj, where)


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


def check_inflation(members, archive_bytes: int, where: str) -> None:
    """Refuse (UnsafeModel) a zip member that declares far more bytes than it stores, or a name stored
    twice (a reader checks one copy; Keras unpacks them all)."""
    members = list(members)
    names = [info.filename for info in members]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UnsafeModel(f"{where}: its archive stores {', '.join(twice)} more than once; refused.")
    for info in members:
        limit = min(_MAX_MEMBER_BYTES, _MAX_INFLATION * max(info.compress_size, 1) + (1 << 20))
        if info.file_size > limit:
            raise UnsafeModel(
                f"{where}: its member {info.filename} declares {info.file_size} bytes from "
                f"{info.compress_size} stored ({archive_bytes} in the archive); a model's "
                "weights never inflate that much, so it is refused (a zip bomb)."
            )


def read_keras_config(data: bytes, where: str) -> dict:
    """Return the config of ``.keras`` archive ``data`` after every check but Keras' own load.

    Raises UnsafeModel for other members, objects outside the list, a zip bomb or a weights
    file that links outside itself.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        check_inflation(archive.infolist(), len(data), where)
        members = {info.filename: info for info in archive.infolist()}
        if set(members) != KERAS_MEMBERS:
            raise UnsafeModel(
                f"{where} holds {sorted(members)}; a Keras model archive holds exactly {sorted(KERAS_MEMBERS)}. "
                "Refused."
            )
        if members["config.json"].file_size > _MAX_CONFIG_BYTES:
            raise UnsafeModel(f"{where}: its config.json declares {members['config.json'].file_size} bytes.")
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")
    except UnsafeModel:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, RecursionError) as exc:
        raise UnsafeModel(f"{where} is not a readable .keras archive ({type(exc).__name__}: {exc}).") from None
    if not isinstance(config, dict):
        raise UnsafeModel(f"{where}: its config.json holds a {type(config).__name__}, not a model's config; refused.")
    check_keras_config(config, where)
    _check_weights_file(weights, where)
    return config


def check_keras(data: bytes, where: str) -> None:
    """Refuse (UnsafeModel) a ``.keras`` archive ``read_keras_config`` refuses."""
    read_keras_config(data, where)


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
