"""ImageNet weights come only from $KERAS_HOME (or ~/.keras), and match the hash Keras publishes.

Keras itself falls back to ``/tmp/.keras`` when its home cannot be written, a
folder any local user can fill; weights planted there must never be used. A file
in the Keras cache that does not match the md5 Keras publishes for it is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from bneck.core.errors import WeightsError
from bneck.features.backbones.registry import get_backbone
from bneck.features.backbones.weights import resolve_weights
from bneck.features.backbones.weights_store import imagenet_candidates
from tests.conftest import MOBILENET_FILE, MOBILENET_WEIGHTS, copy_subset
from tests.reliability.conftest import MOBILENET_ARGS

PLANTED = Path("/tmp/.keras/models") / MOBILENET_FILE


@pytest.fixture
def planted_in_tmp():
    """A weights file planted where Keras falls back to (removed afterwards if the test put it there)."""
    existed = PLANTED.exists()
    if not existed:
        PLANTED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MOBILENET_WEIGHTS, PLANTED)
    yield PLANTED
    if not existed:
        PLANTED.unlink()


@pytest.mark.parametrize("home", ["empty", "read-only"])
def test_weights_planted_in_tmp_keras_are_never_used(planted_in_tmp, tmp_path, bneck, home):
    keras_home = tmp_path / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    if home == "read-only":
        keras_home.joinpath("models").chmod(0o555)  # Keras would fall back to /tmp/.keras here
    data = copy_subset(tmp_path / "data", 1, splits=("train",))
    done = bneck(
        tmp_path,
        ["extract", data, "--out", tmp_path / "out", *MOBILENET_ARGS, "--quiet"],
        env={"KERAS_HOME": str(keras_home), "BNECK_CACHE": str(tmp_path / "cache")},
        offline=True,
        honour_permissions=True,
    )
    assert done.returncode == 2, done.output
    assert str(keras_home / "models") in done.output and MOBILENET_FILE in done.output
    assert not (tmp_path / "out" / "train.h5").exists()
    assert all("/tmp/.keras" not in p for p in imagenet_candidates(MOBILENET_FILE))


def test_a_file_that_does_not_match_the_published_hash_is_refused(tmp_path, monkeypatch):
    import bneck.features.backbones.registry as backbones

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    shutil.copy(MOBILENET_WEIGHTS, tmp_path / "models" / MOBILENET_FILE)
    real = hashlib.md5(MOBILENET_WEIGHTS.read_bytes()).hexdigest()
    entry = get_backbone("mobilenet")
    monkeypatch.setitem(backbones.BACKBONES, "mobilenet", dataclasses.replace(entry, weights_md5=real))
    assert resolve_weights(backbones.BACKBONES["mobilenet"], 0.25, 224, "imagenet").path.endswith(MOBILENET_FILE)
    with open(tmp_path / "models" / MOBILENET_FILE, "r+b") as handle:  # the same file, one byte changed
        handle.seek(os.path.getsize(tmp_path / "models" / MOBILENET_FILE) // 2)
        handle.write(b"\x00")
    with pytest.raises(WeightsError, match="not the official ImageNet weights file.*Keras publishes"):
        resolve_weights(backbones.BACKBONES["mobilenet"], 0.25, 224, "imagenet")


def test_the_published_hashes_are_keras_own():
    """The md5 each backbone pins is the file_hash Keras' own application code passes to get_file."""
    import inspect

    import keras.src.applications as apps

    for name in ("vgg16", "vgg19", "resnet50", "inceptionv3", "xception", "efficientnetb0"):
        entry = get_backbone(name)
        module = {"resnet50": "resnet", "inceptionv3": "inception_v3", "efficientnetb0": "efficientnet"}.get(name, name)
        source = inspect.getsource(__import__(f"{apps.__name__}.{module}", fromlist=["x"]))
        assert entry.weights_md5 and f'"{entry.weights_md5}"' in source, name
    assert get_backbone("mobilenet").weights_md5 is None and get_backbone("mobilenetv2").weights_md5 is None


def test_another_models_file_under_an_official_name_is_named_as_the_culprit(tmp_path, monkeypatch):
    """Issue 27: MobileNetV2 weights added under MobileNet's official name made `--weights imagenet` fail
    with "--weights must be 'imagenet', ...", which the user had passed: the file found is named instead."""
    from bneck.features import extract

    store = tmp_path / "weights"
    store.mkdir()
    other = MOBILENET_WEIGHTS.parent / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    shutil.copy(other, store / MOBILENET_FILE)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    monkeypatch.setenv("BNECK_WEIGHTS", str(store))
    monkeypatch.setenv("BNECK_OFFLINE", "1")
    data = copy_subset(tmp_path / "data", 1, splits=("train",))
    with pytest.raises(WeightsError) as err:
        extract(data, tmp_path / "out", backbone="mobilenet", alpha=0.25, size=224, weights="imagenet", verbose=False)
    said = str(err.value)
    assert f"The file found for 'imagenet' at {store / MOBILENET_FILE} is not this backbone's" in said, said
    assert "--weights must be 'imagenet'" not in said and not (tmp_path / "out").exists()
