"""The extractor key: every key field changes it, nothing else does."""

from __future__ import annotations

import dataclasses

import pytest

from bneck.features.backbones.spec import KEY_FIELDS, NOT_IN_KEY, ExtractorSpec, extractor_key

pytestmark = pytest.mark.pure

BASE = ExtractorSpec(
    backbone="vgg16",
    alpha=None,
    weights="imagenet",
    weights_sha256="ab" * 32,
    layer="block5_pool",
    pool="none",
    input_size=150,
    preprocessing="keras.applications.vgg16.preprocess_input (caffe)",
)

CHANGES = {
    "schema_version": 2,
    "backbone": "vgg19",
    "alpha": 0.5,
    "weights_sha256": "cd" * 32,
    "layer": "block4_pool",
    "pool": "avg",
    "input_size": 224,
    "preprocessing": "tf",
    "interpolation": "pil-bicubic",
    "dtype": "float16",
    "augmentation": '{"rotation": 40, "seed": 0, "view": 1}',
    "quantization": '{"precision": "int8", "calibration_sha256": "ef"}',
}


def test_every_key_field_is_tested():
    assert set(CHANGES) == set(KEY_FIELDS)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_key_field_changes_the_key(name):
    assert dataclasses.replace(BASE, **{name: CHANGES[name]}).key != BASE.key


@pytest.mark.parametrize("name,value", [("weights", "vgg16_copy.h5"), ("weights_path", "/else/where.h5")])
def test_fields_left_out_do_not_change_the_key(name, value):
    assert name in NOT_IN_KEY
    assert dataclasses.replace(BASE, **{name: value}).key == BASE.key


def test_key_is_sha256_of_sorted_json_and_stable():
    import hashlib
    import json

    fields = dataclasses.replace(BASE, augmentation="flip", quantization="int8").key_fields()
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert extractor_key(fields) == hashlib.sha256(text.encode()).hexdigest()
    assert set(fields) == set(KEY_FIELDS)


def test_unset_augmentation_keeps_the_plain_key():
    import hashlib
    import json

    plain = {k: v for k, v in BASE.key_fields().items() if k not in ("augmentation", "quantization")}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    assert BASE.augmentation is None and BASE.quantization is None
    assert BASE.key == hashlib.sha256(text.encode()).hexdigest()
