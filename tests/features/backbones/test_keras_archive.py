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
from bneck.pipeline.cli.backbones import smallest_of_each_family
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
    smallest_of_each_family()
    + [pytest.param(n, marks=pytest.mark.matrix) for n in sorted(BACKBONES) if n not in smallest_of_each_family()],
)
def test_every_backbone_with_every_head_passes_the_keras_check(name):
    """What bneck saves (backbone + head as stage 3 assembles it) is all inside KERAS_OBJECTS, for the
    smallest model of every keras.applications family (every model with ``--matrix``)."""
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
