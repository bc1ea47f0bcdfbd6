"""The catalog is what the installed Keras says: every constructor, derived from Keras and the graph."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib import metadata

import keras
import pytest

from bneck.core.errors import ConfigError
from bneck.features.backbones import registry
from bneck.features.backbones.catalog import catalog, catalog_keras_version
from bneck.features.backbones.discover import constructors, derive_record
from bneck.features.backbones.registry import BACKBONES, entry_from_record, get_backbone
from tests.conftest import ROOT

pytestmark = pytest.mark.pure


def test_every_constructor_of_the_installed_keras_is_a_backbone():
    assert catalog_keras_version() == keras.__version__, "rerun scripts/backbone_catalog.py"
    assert sorted(c.lower() for c in constructors()) == sorted(catalog()) == sorted(BACKBONES)
    assert len(BACKBONES) >= 40


# A chain (VGG16), automatic names and operations (MobileNetV3Small), ops as stage outputs and a
# sha256 weights hash (ConvNeXtTiny); every constructor with --matrix.
SAMPLE = ["VGG16", "MobileNetV3Small", "ConvNeXtTiny"]
REST = [pytest.param(c, marks=pytest.mark.matrix) for c in sorted(catalog(), key=str) if c not in SAMPLE]


@pytest.mark.parametrize("constructor", SAMPLE)
def test_a_record_is_what_keras_and_the_graph_say_now(constructor):
    assert derive_record(constructor) == catalog()[constructor.lower()]


@pytest.mark.parametrize("name", REST)
def test_every_record_is_what_keras_and_the_graph_say_now(name):
    record = catalog()[name]
    assert derive_record(record["constructor"]) == record


def test_the_backbones_of_0_2_keep_every_key_field():
    """Feature files and cache rows of 0.2 name these; a changed field would orphan them all."""
    before = {
        "vgg16": ("vgg16", "caffe: RGB->BGR, ImageNet mean subtracted", 150, "block5_pool"),
        "vgg19": ("vgg19", "caffe: RGB->BGR, ImageNet mean subtracted", 150, "block5_pool"),
        "resnet50": ("resnet50", "caffe: RGB->BGR, ImageNet mean subtracted", 224, "conv5_block3_out"),
        "inceptionv3": ("inception_v3", "tf: scaled to [-1, 1]", 299, "mixed10"),
        "xception": ("xception", "tf: scaled to [-1, 1]", 299, "block14_sepconv2_act"),
        "mobilenet": ("mobilenet", "tf: scaled to [-1, 1]", 224, "conv_pw_13_relu"),
        "mobilenetv2": ("mobilenet_v2", "tf: scaled to [-1, 1]", 224, "out_relu"),
        "efficientnetb0": (
            "efficientnet",
            "none outside the model: rescaling and normalisation are layers of the model",
            224,
            "top_activation",
        ),
    }
    for name, fields in before.items():
        entry = get_backbone(name)
        assert (entry.module, entry.preprocessing, entry.default_size, entry.default_layer) == fields, name
    assert get_backbone("mobilenet").weights_file(0.25, 224) == "mobilenet_2_5_224_tf_no_top.h5"
    assert get_backbone("mobilenetv2").weights_file(0.5, 224).endswith("_0.5_224_no_top.h5")
    assert get_backbone("vgg16").unfreeze_points[0] == "block5_conv1"  # the reference recipe's point, from the graph
    assert get_backbone("inceptionv3").last_block == "conv2d_80"  # 0.2's 'after:mixed8', named once names are fixed


def test_a_constructor_of_a_newer_keras_is_derived_on_first_use(monkeypatch):
    monkeypatch.delitem(BACKBONES, "mobilenetv3small")
    monkeypatch.setattr(registry, "catalog_keras_version", lambda: "0.0-an-older-keras")
    entry = get_backbone("MobileNetV3Small")
    want = entry_from_record("mobilenetv3small", catalog()["mobilenetv3small"])
    assert dataclasses.replace(entry, weights_file=None) == dataclasses.replace(want, weights_file=None)
    assert (
        entry.weights_file(None, 224)
        == want.weights_file(None, 224)
        == "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    )
    with pytest.raises(ConfigError, match="backbone"):
        get_backbone("mobilenetv9")


def test_an_unknown_name_is_refused_at_once_without_tensorflow():
    code = (
        "import sys\n"
        "from bneck.features.backbones.registry import get_backbone\n"
        "try:\n    get_backbone('vgg61')\nexcept ValueError as exc:\n    print(exc)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vgg61" in done.stdout and "convnexttiny" in done.stdout
    assert metadata.version("keras") == catalog_keras_version()
