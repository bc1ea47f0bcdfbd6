"""A user's own Keras model as the backbone: ``--backbone PATH.keras``.

The file is read like every Keras file bneck reads (``keras_archive``): checked before Keras
sees it (no ``Lambda``, no custom object, no function, no layer that reads files), then loaded
with ``safe_mode=True`` from the bytes that were checked. It is keyed by its sha256 the way a
weights file is (``ExtractorSpec.backbone`` is ``keras-file``, ``weights_sha256`` the file's
hash, ``weights_path`` where it was read), so a renamed or moved copy still matches its cached
rows and an edited one never does, and later stages find it again by content.

It receives RGB in 0..255 as float32 unless ``--preprocess`` names a ``keras.applications``
family whose ``preprocess_input`` to apply. Its default layer is the model's output; any layer
works with ``--layer``; its cut and unfreeze points come from its graph (``graph``), as for the
``keras.applications`` models. A model with a free input side (``None``) is built at ``--size``
(default 224); one with a fixed side takes only that side.
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from dataclasses import dataclass, replace

from bneck.core.errors import ConfigError, WeightsError, choice_error
from bneck.core.files import open_regular
from bneck.core.hashing import sha256_bytes
from bneck.features.backbones.catalog import catalog
from bneck.features.backbones.keras_archive import UnsafeModel, load_keras, read_keras_config
from bneck.features.backbones.registry import MAX_SIZE, Backbone, get_backbone

MODEL_FILE = "keras-file"  # ``ExtractorSpec.backbone`` of every user model file
NO_PREPROCESSING = "none outside the model: RGB 0..255 as float32 go in"
DEFAULT_FREE_SIZE = 224
MIN_FREE_SIZE = 32


def is_model_file(backbone) -> bool:
    """Whether a ``--backbone`` value names a file rather than a registered backbone."""
    text = str(backbone)
    return text.lower().endswith(".keras") or "/" in text or os.sep in text


def preprocess_choices() -> dict[str, str]:
    """``--preprocess`` values: 'none' and each keras.applications family (its module), with what it does."""
    found = {"none": NO_PREPROCESSING}
    for record in catalog().values():
        found.setdefault(record["module"], record["preprocessing"])
    return dict(sorted(found.items()))


def preprocessing_text(module: str) -> str:
    """The spec's ``preprocessing`` for a model file given ``--preprocess module`` ('' or 'none': none)."""
    if module in ("", "none"):
        return NO_PREPROCESSING
    return f"keras.applications.{module}.preprocess_input ({preprocess_choices()[module]})"


def module_of(preprocessing: str) -> str:
    """The family module a spec's ``preprocessing`` names, '' when none."""
    prefix = "keras.applications."
    return preprocessing[len(prefix) :].split(".", 1)[0] if preprocessing.startswith(prefix) else ""


@dataclass(frozen=True)
class ModelFileBackbone(Backbone):
    """A registry-shaped entry for one model file (its path and sha256), with its preprocessing."""

    path: str = ""
    sha256: str = ""
    input_side: int | None = None  # the file's own input side; None: any

    @property
    def label(self) -> str:
        return os.path.basename(self.path) or "your model file"

    def preprocess_fn(self):
        """The family's ``preprocess_input``, or the identity for 'none'."""
        if not self.module:
            return lambda x: x
        return super().preprocess_fn()

    def build(self, weights, size: int, alpha: float | None):
        """Load the file's model (``weights`` and ``alpha`` do not apply: it carries its weights) at ``size``."""
        data = _read(self.path)
        if self.sha256 and sha256_bytes(data) != self.sha256:
            raise WeightsError(
                f"the model file {self.path} changed while bneck used it (its sha256 is no longer "
                f"{self.sha256[:12]}...). Rerun with the file you mean."
            )
        model = load_keras(_at_size(data, size) if self.input_side is None else data, self.path)
        if not hasattr(model, "operations"):  # a Sequential model: the same layers as a functional graph
            import keras

            from bneck.features.backbones.graph import single_input

            model = keras.Model(single_input(model), model.outputs, name=model.name)
        return model


# The largest model file read (into memory, where it is checked and hashed): ConvNeXtXLarge, the largest
# keras.applications model, is 1.4 GB.
MAX_MODEL_FILE_BYTES = 3 << 30


def _read(path: str) -> bytes:
    """The bytes of the regular file ``path``, refused past ``MAX_MODEL_FILE_BYTES`` before any is read."""
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_MODEL_FILE_BYTES:
                raise UnsafeModel(
                    f"the model file {path} is {size} bytes, more than the {MAX_MODEL_FILE_BYTES} bytes of the "
                    "largest model bneck reads (keras.applications' largest is 1.4 GB); refused before reading it."
                )
            return handle.read(MAX_MODEL_FILE_BYTES + 1)
    except OSError as exc:
        raise WeightsError(f"the model file {path} cannot be read: {exc.strerror or exc}.") from None


def _input_layer(config: dict, where: str) -> dict:
    """The InputLayer's config of a Functional or Sequential model config; UnsafeModel-free ConfigError else."""
    inner = config.get("config", {})
    layers = inner.get("layers", [])
    listed = inner.get("input_layers") or []
    if listed and isinstance(listed[0], str):  # one input is saved as one [name, node, tensor]
        listed = [listed]
    names = [entry[0] for entry in listed if isinstance(entry, list) and entry]
    if config.get("class_name") == "Functional" and len(names) != 1:
        raise ConfigError(
            f"the model file {where} takes {len(names)} inputs; a backbone takes one image "
            f"input of shape (side, side, 3)."
        )
    for layer in layers:
        if layer.get("class_name") == "InputLayer" and (not names or layer.get("name") == names[0]):
            return layer.get("config", {})
    raise ConfigError(
        f"the model file {where}: its configuration names no input layer (a {config.get('class_name')} "
        "model saved without keras.Input?). Build it on keras.Input((side, side, 3)) and save it again."
    )


def _output_layer(config: dict) -> str:
    inner = config.get("config", {})
    outputs = inner.get("output_layers") or []
    if config.get("class_name") == "Functional" and outputs:
        first = outputs[0] if isinstance(outputs[0], list) else outputs
        return str(first[0])
    last = (inner.get("layers") or [{}])[-1]
    return str(last.get("name") or last.get("config", {}).get("name", ""))


def _input_side(config: dict, where: str) -> int | None:
    shape = _input_layer(config, where).get("batch_shape") or []
    if not isinstance(shape, list) or len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2]:
        raise ConfigError(
            f"the model file {where}: its input has shape {tuple(shape)}; a backbone takes square RGB "
            "images: (None, side, side, 3), or (None, None, None, 3) for any side."
        )
    if shape[1] is not None and (not isinstance(shape[1], int) or not 1 <= shape[1] <= MAX_SIZE):
        raise ConfigError(
            f"the model file {where}: its input side is {shape[1]!r}; bneck takes sides from 1 to {MAX_SIZE} pixels."
        )
    return None if shape[1] is None else int(shape[1])


def _at_size(data: bytes, size: int) -> bytes:
    """The archive ``data`` with its free-sized input fixed at ``size`` (the weights do not change)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    _input_layer(config, "the model file")["batch_shape"] = [None, size, size, 3]
    members["config.json"] = json.dumps(config).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, member in members.items():
            archive.writestr(name, member)
    return out.getvalue()


def check_model_file(path: str) -> tuple[str, str, dict]:
    """Return (absolute path, sha256, config) of the model file ``path`` after every check that reads
    no more than its bytes. Raises ConfigError for a path that is no ``.keras`` file, UnsafeModel
    (a BneckError, exit 2) for one holding code, and WeightsError for one that cannot be read."""
    where = os.path.abspath(os.path.expanduser(str(path)))
    if not str(path).lower().endswith(".keras") or not os.path.isfile(where):
        raise ConfigError(
            "--backbone must be a backbone name (`bneck backbones` lists them) or the path of an existing "
            "Keras model file ending in .keras (Keras 3's format: model.save('name.keras')); a legacy .h5 "
            f"model or a SavedModel folder is not read. Received: backbone={str(path)!r}"
            f"{'' if os.path.isfile(where) else f', and no file exists at {where}'}."
        )
    data = _read(where)
    config = read_keras_config(data, where)
    if config.get("class_name") not in ("Functional", "Sequential") or not isinstance(config.get("config"), dict):
        raise UnsafeModel(f"{where} holds a {config.get('class_name')!r}; a backbone file holds a Keras model.")
    return where, sha256_bytes(data), config


def model_file_entry(path: str, preprocess: str | None) -> ModelFileBackbone:
    """The light entry for ``--backbone PATH`` (from its checked config: no TensorFlow), for resolving options."""
    module = "" if preprocess in (None, "none") else str(preprocess)
    if module and module not in preprocess_choices():
        raise choice_error("preprocess", list(preprocess_choices()), preprocess)
    where, sha256, config = check_model_file(path)
    try:
        side, output = _input_side(config, where), _output_layer(config)
    except (TypeError, AttributeError, IndexError, KeyError, ValueError) as exc:
        raise UnsafeModel(
            f"{where}: its config.json is not a model configuration Keras writes ({type(exc).__name__}: "
            f"{str(exc)[:120]}); refused."
        ) from None
    return _entry(where, sha256, module, side, output)


def _entry(where: str, sha256: str, module: str, side: int | None, default_layer: str) -> ModelFileBackbone:
    return ModelFileBackbone(
        name=MODEL_FILE,
        constructor="",
        module=module,
        preprocessing=NO_PREPROCESSING if not module else preprocess_choices()[module],
        default_size=side or DEFAULT_FREE_SIZE,
        min_size=side or MIN_FREE_SIZE,
        max_size=side or MAX_SIZE,
        default_layer=default_layer,
        cut_points=(),
        weights_file=lambda alpha, size: None,
        weights_origin="",
        family="your own model",
        path=where,
        sha256=sha256,
        input_side=side,
    )


@functools.lru_cache(maxsize=8)
def _graph_entry(path: str, sha256: str, module: str, size: int) -> ModelFileBackbone:
    from bneck.features.backbones.feature_model import architecture
    from bneck.features.backbones.graph import describe_graph

    light = model_file_entry(path, module or None)
    if light.sha256 != sha256:
        raise WeightsError(f"the model file {path} is no longer the file of sha256 {sha256[:12]}...; rerun.")
    described = describe_graph(architecture(light, size, None), size)
    return replace(
        light,
        cut_points=tuple(described["cut_points"]),
        unfreeze_points=tuple(described["unfreeze_points"]),
        unfreeze_splits=described["unfreeze_splits"],
        parameters=described["parameters"],
        multiply_adds=described["multiply_adds"],
    )


def backbone_from_options(backbone: str, preprocess: str | None = None) -> Backbone:
    """The entry ``--backbone`` names: a registered one, or a model file's light entry (``model_file_entry``)."""
    return model_file_entry(backbone, preprocess) if is_model_file(backbone) else get_backbone(backbone)


def with_graph(entry: Backbone, size: int) -> Backbone:
    """``entry`` with its cut and unfreeze points: a model file's are read from its graph at ``size``."""
    if not isinstance(entry, ModelFileBackbone):
        return entry
    return _graph_entry(entry.path, entry.sha256, entry.module, size)


def backbone_for(spec) -> Backbone:
    """The entry that builds ``spec``'s network: a registered backbone, or the model file it recorded
    (found by content, at ``spec.weights_path``), with cut and unfreeze points from its graph."""
    if spec.backbone != MODEL_FILE:
        return get_backbone(spec.backbone)
    if not spec.weights_path:
        raise WeightsError(
            f"the features were made with a model file of sha256 {spec.weights_sha256[:12]}...; "
            "pass --weights PATH to that file."
        )
    return _graph_entry(spec.weights_path, spec.weights_sha256, module_of(spec.preprocessing), spec.input_size)


def preprocessing_entry(spec) -> Backbone:
    """An entry that knows ``spec``'s preprocessing (and nothing it would need a file for)."""
    if spec.backbone != MODEL_FILE:
        return get_backbone(spec.backbone)
    return _entry("", "", module_of(spec.preprocessing), None, "")


def preprocess_for(spec):
    """``spec``'s preprocessing function, without reading its backbone's weights or model file."""
    return preprocessing_entry(spec).preprocess_fn()
