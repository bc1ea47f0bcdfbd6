"""The one allow-list of Keras objects every ``.keras`` file bneck reads is checked against: it covers
every keras.applications family with bneck's heads, and nothing that can carry code gets through."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from bneck.features.backbones.keras_archive import (
    IMAGE_MODEL_LAYERS,
    KERAS_OBJECTS,
    UnsafeModel,
    check_keras,
    check_keras_config,
    load_keras,
)
from bneck.features.backbones.registry import BACKBONES
from bneck.pipeline.training.heads import build_head

pytestmark = pytest.mark.pure


def _archive(model) -> bytes:
    """Return the bytes of ``model`` saved as a .keras archive."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        with open(path, "rb") as handle:
            return handle.read()


@pytest.mark.parametrize(
    "name",
    ["mobilenetv3small"]
    + [pytest.param(n, marks=pytest.mark.matrix) for n in sorted(BACKBONES) if n != "mobilenetv3small"],
)
def test_every_backbone_with_every_head_passes_the_keras_check(name):
    """What bneck saves (backbone + head as stage 3 assembles it) is all inside KERAS_OBJECTS, with each
    pooling and head: for MobileNetV3Small by default (graph operations, the smallest model), every model
    with ``--matrix``. Every family's smallest model is saved fine-tuned and loaded through this check by
    ``test_families.py`` in every run."""
    from bneck.core.tfimport import import_tensorflow
    from bneck.features.backbones.feature_model import cut_model

    import_tensorflow()
    import keras

    entry = BACKBONES[name]
    size = max(entry.min_size, 75)
    alpha = {"mobilenet": 0.25, "mobilenetv2": 0.35}.get(name)
    base = entry.build(None, size, alpha)
    for pool in ("none", "avg", "max"):
        cut = cut_model(base, entry, entry.default_layer, pool)
        image = keras.Input((size, size, 3))
        head = build_head("dense" if pool == "none" else "gap-dense", tuple(cut.output.shape[1:]), 2, 4, 0.5)
        assembled = keras.Model(image, head(cut(image, training=False)))
        # The config a .keras archive holds, without writing its weights: the archive is written once.
        check_keras_config(json.loads(json.dumps(keras.saving.serialize_keras_object(assembled))), f"{name} {pool}")
    data = _archive(assembled)
    check_keras(data, name)
    model = load_keras(data, name)  # and Keras itself loads what the check let through
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize(
    "obj",
    [
        {"module": "keras.layers", "class_name": "Lambda", "config": {}},
        {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "/"}},
        {"module": "keras.layers", "class_name": "StringLookup", "config": {"vocabulary": "/etc/passwd"}},
        {"module": "keras.layers", "class_name": "Dense", "config": {}, "registered_name": "evil>Dense"},
        {"module": "evil", "class_name": "Dense", "config": {}},
        {"module": "keras.activations", "class_name": "function", "config": "relu"},
    ],
)
def test_the_keras_check_refuses_anything_outside_its_list(obj):
    assert (obj.get("module"), obj["class_name"]) not in KERAS_OBJECTS or obj.get("registered_name")
    config = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": "Functional",
        "config": {"layers": [{"module": "keras.layers", "class_name": "InputLayer", "config": {}}, obj]},
    }
    with pytest.raises(UnsafeModel, match=repr(obj["class_name"])):
        check_keras_config(config, "m.keras")
    check_keras_config(
        json.loads(json.dumps({**config, "config": {"layers": config["config"]["layers"][:1]}})), "m.keras"
    )


def test_every_listed_layer_is_one_of_keras_own_and_none_takes_code_or_files():
    import inspect

    import keras

    for name in IMAGE_MODEL_LAYERS:
        layer = getattr(keras.layers, name)
        assert inspect.getmodule(layer).__name__.startswith("keras.src.layers"), name
        parameters = inspect.signature(layer.__init__).parameters
        assert not {"function", "filepath", "vocabulary", "call_endpoint", "module"} & set(parameters), name


def _members(tmp_path) -> dict:
    """The three members of a small model's .keras archive."""
    import io
    import zipfile

    import keras

    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(image)
    data = _archive(keras.Model(image, keras.layers.GlobalAveragePooling2D()(x)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(members: list) -> bytes:
    import io
    import warnings
    import zipfile

    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, and writes it
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def _with_config(members: dict, change) -> bytes:
    config = json.loads(members["config.json"])
    config = change(config)
    return _zip([("config.json", json.dumps(config)), *((n, d) for n, d in members.items() if n != "config.json")])


def _layer(config: dict, class_name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == class_name)["config"]


def _set(path: list, value):
    def change(config):
        target = config
        for key in path[:-1]:
            target = target[key] if not callable(key) else key(target)
        target[path[-1]] = value
        return config

    return change


HOSTILE_ARCHIVES = {  # name: (how the archive is made from the small model's members, what the refusal says)
    "a member stored twice (a bomb in the first copy)": (
        lambda m: _zip([("metadata.json", bytes(64 << 20))] + list(m.items())),
        "more than once",
    ),
    "a width Keras would allocate first": (
        _set([lambda c: _layer(c, "Conv2D"), "filters"], 250_000_000),
        "filters = 250000000",
    ),
    "an image side of 100000": (
        _set([lambda c: _layer(c, "InputLayer"), "batch_shape"], [None, 100_000, 100_000, 3]),
        "batch_shape",
    ),
    "a window of 30000": (_set([lambda c: _layer(c, "Conv2D"), "kernel_size"], [30_000, 30_000]), "kernel_size"),
    "a class name that is a list": (_set([lambda c: c["config"]["layers"][1], "class_name"], ["Conv2D"]), "['Conv2D']"),
    "a module that is a table": (_set([lambda c: c["config"]["layers"][1], "module"], {}), "module {}"),
    "a config 150 levels deep": (_set(["config", "name"], json.loads("[" * 150 + "]" * 150)), "nests more than"),
    "a list for a config": (lambda m: _with_config(m, lambda c: []), "holds a list"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ARCHIVES))
def test_hostile_archives_are_refused_in_one_paragraph_before_keras_reads_them(case, tmp_path):
    make, says = HOSTILE_ARCHIVES[case]
    members = _members(tmp_path)
    data = make(members) if case.startswith(("a member", "a list")) else _with_config(members, make)
    with pytest.raises(UnsafeModel) as refused:
        check_keras(data, "m.keras")
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_malformed_model_files_are_refused_as_such_never_with_a_traceback(tmp_path):
    from bneck.core.errors import BneckError
    from bneck.features.backbones.model_file import model_file_entry

    members = _members(tmp_path)
    changes = [
        _set(["config", "input_layers"], 5),
        _set(["config", "output_layers"], [[]]),
        _set([lambda c: c["config"]["layers"][0], "config"], "x"),
        _set([lambda c: _layer(c, "InputLayer"), "batch_shape"], [None, "x", "x", 3]),
        _set(["config", "layers"], ["a layer as text"]),
    ]
    for i, change in enumerate(changes):
        path = tmp_path / f"bad{i}.keras"
        path.write_bytes(_with_config(members, change))
        with pytest.raises(BneckError):
            model_file_entry(str(path), None)


def test_a_lattice_of_hard_links_is_checked_once_per_object(tmp_path):
    """60 levels of two hard links to the next group: 2**60 paths, 61 objects."""
    import h5py

    from bneck.features.featurefile.reach import check_self_contained

    with h5py.File(tmp_path / "lattice.h5", "w") as f:
        groups = [f.create_group(f"lattice/n{i}") for i in range(61)]
        for upper, lower in zip(groups, groups[1:]):
            upper["a"], upper["b"] = lower, lower
        seen: set = set()
        check_self_contained(f, seen=seen)
        assert len(seen) == 62  # 'lattice' and its 61 groups, each once


def test_a_model_file_beyond_the_largest_model_is_refused_before_it_is_read(tmp_path):
    from bneck.features.backbones.model_file import MAX_MODEL_FILE_BYTES, model_file_entry

    path = tmp_path / "huge.keras"
    with open(path, "wb") as handle:
        handle.truncate(MAX_MODEL_FILE_BYTES + 1)  # sparse: no disk is used
    with pytest.raises(UnsafeModel, match="refused before reading it"):
        model_file_entry(str(path), None)
