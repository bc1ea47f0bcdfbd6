"""Typed manifests: what a model folder's manifest.json may hold, field by field (pure: no ../shared)."""

from __future__ import annotations

import copy
import json

import pytest

from bneck.features.backbones.spec import ExtractorSpec
from bneck.pipeline.manifests import (
    ClassifierManifest,
    FeatureFileRef,
    FinetunedManifest,
    HeadRef,
    ManifestError,
    parse_manifest,
)

pytestmark = pytest.mark.pure

SPEC = ExtractorSpec("mobilenet", 0.25, "imagenet", "aa" * 32, "conv_pw_13_relu", "none", 224, "tf: scaled to [-1, 1]")

CLASSIFIER = {
    "kind": "sklearn",
    "classifier": "logreg",
    "model_file": "model.skops",
    "config": {"reshape": "avg", "pca": None, "search": None, "folds": 5, "seed": 0},
    "class_names": ["cats", "dogs"],
    "extractor_key": SPEC.key,
    "extractor": SPEC.describe(),
    "weights_path": "/w.h5",
    "metrics": {"validation": {"accuracy": 0.9, "loss": 0.3, "macro_f1": 0.9}},
    "streamed": False,
    "feature_shape": [7, 7, 256],
    "feature_files": {"train": {"path": "/f/train.h5", "sha256": "cd" * 32}},
    "search": {},
    "manifest_version": 2,
    "versions": {"bneck": "0.2.0"},
    "created_utc": "2026-11-23T00:00:00+00:00",
    "artifacts": {"model.skops": "ef" * 32},
}
FINETUNED = {
    "kind": "finetuned",
    "classifier": "finetuned",
    "model_file": "model.keras",
    "config": {"epochs": 2},
    "class_names": ["cats", "dogs"],
    "extractor_key": SPEC.key,
    "extractor": SPEC.describe(),
    "weights_path": "",
    "metrics": {},
    "head": {"folder": "/m/dense", "classifier": "dense", "manifest_sha256": "12" * 32},
    "data": "/data",
    "requested": {"epochs": 2},
    "input": "preprocessed image 224x224x3",
    "trainable_layers": ["conv_pw_13"],
    "frozen_layers": 20,
    "images": {"train": 10},
    "skipped_images": {"train": [["a.jpg", "broken"]]},
}


def test_a_written_manifest_reads_back_typed_and_equal():
    m = parse_manifest(json.loads(json.dumps(CLASSIFIER)), "here")
    assert isinstance(m, ClassifierManifest) and m.feature_files["train"] == FeatureFileRef("/f/train.h5", "cd" * 32)
    assert parse_manifest(json.loads(json.dumps(m.to_json())), "here") == m
    f = parse_manifest(FINETUNED, "here")
    assert isinstance(f, FinetunedManifest) and f.head == HeadRef("/m/dense", "dense", "12" * 32)
    assert f.trainable_layers == ["conv_pw_13"] and f.frozen_layers == 20


@pytest.mark.parametrize(
    "field, value",
    [
        ("class_names", "cats"),
        ("class_names", [1, 2]),
        ("config", []),
        ("streamed", "no"),
        ("feature_shape", [7, "7"]),
        ("feature_files", {"train": "/f/train.h5"}),
        ("feature_files", {"train": {"path": "/f", "sha256": 5}}),
        ("metrics", None),
        ("artifacts", {"a": 1}),
        ("manifest_version", True),
        ("extractor_key", 7),
        ("classifier", None),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_it(field, value):
    raw = {**copy.deepcopy(CLASSIFIER), field: value}
    with pytest.raises(ManifestError, match=repr(field)):
        parse_manifest(raw, "FOLDER/manifest.json")


def test_an_unknown_field_a_missing_field_and_an_unknown_kind_are_refused():
    with pytest.raises(ManifestError, match="'run_this'"):
        parse_manifest({**CLASSIFIER, "run_this": "os.system"}, "here")
    with pytest.raises(ManifestError, match="lacks the field 'feature_files'"):
        parse_manifest({k: v for k, v in CLASSIFIER.items() if k != "feature_files"}, "here")
    with pytest.raises(ManifestError, match="kind 'pickle'"):
        parse_manifest({**CLASSIFIER, "kind": "pickle"}, "here")
    with pytest.raises(ManifestError, match="not a table"):
        parse_manifest(["kind", "sklearn"], "here")
    with pytest.raises(ManifestError, match=r"kind \['sklearn'\]"):  # not a name at all
        parse_manifest({**CLASSIFIER, "kind": ["sklearn"]}, "here")
    with pytest.raises(ManifestError, match="'head'"):  # a nested record is typed too
        parse_manifest({**FINETUNED, "head": {**FINETUNED["head"], "manifest_sha256": 1}}, "here")
    with pytest.raises(ManifestError, match="'feature_files'"):  # each kind has only its own fields
        parse_manifest({**FINETUNED, "feature_files": {}}, "here")


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.pop("weights_sha256"),
        lambda e: e.pop("layer"),
        lambda e: e.update(layer="conv_pw_12_relu"),
        lambda e: e.update(input_size=40000),
        lambda e: e.update(backbone="mobilenetv9"),
    ],
)
def test_an_extractor_record_that_does_not_hash_to_its_key_or_is_not_bnecks_is_refused(change):
    for raw in (CLASSIFIER, FINETUNED):
        hostile = copy.deepcopy(raw)
        change(hostile["extractor"])
        with pytest.raises(ManifestError, match="extractor"):
            parse_manifest(hostile, "here")


def test_every_field_of_every_kind_is_checked():
    """Each field set to a value of a type no field takes is refused (so no field is left untyped)."""
    for raw in (CLASSIFIER, FINETUNED):
        for field in raw:
            if field == "kind":
                continue
            with pytest.raises(ManifestError, match=repr(field)):
                parse_manifest({**raw, field: object()}, "here")
