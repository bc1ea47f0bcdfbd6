"""ImageNet weights are found in the Keras cache, then in bneck's own weights folder; `bneck weights add` fills it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bneck.core.errors import WeightsError
from bneck.features.backbones.registry import get_backbone
from bneck.features.backbones.weights import resolve_weights
from bneck.features.backbones.weights_store import add_weights, official_files, strongest_here, weights_here
from tests.conftest import MOBILENET_FILE, MOBILENET_WEIGHTS, SHARED

WEIGHTS = SHARED / "data" / "weights"
V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """An empty Keras cache and an empty bneck weights folder."""
    (tmp_path / "keras" / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("BNECK_WEIGHTS", str(tmp_path / "bneck-weights"))
    return tmp_path / "keras" / "models", tmp_path / "bneck-weights"


def test_added_files_are_found_after_the_keras_cache_and_private_whatever_the_umask(folders):
    keras_models, ours = folders
    old = os.umask(0)
    try:
        done = add_weights([str(WEIGHTS)])
    finally:
        os.umask(old)
    names = sorted(p.name for p in WEIGHTS.glob("*.h5"))
    assert sorted(n for n, _ in done) == names and {s for _, s in done} == {"added"}
    assert stat.S_IMODE(ours.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((ours / n).stat().st_mode) == 0o600 for n in names)
    assert all((ours / n).read_bytes() == (WEIGHTS / n).read_bytes() for n in names)
    mobilenet = get_backbone("mobilenet")
    assert resolve_weights(mobilenet, 0.25, 224, "imagenet").path == str(ours / MOBILENET_FILE)
    other = WEIGHTS / V2_FILE  # the Keras cache comes first: a file there under the same name wins
    shutil.copy(other, keras_models / MOBILENET_FILE)
    found = resolve_weights(mobilenet, 0.25, 224, "imagenet")
    assert found.path == str(keras_models / MOBILENET_FILE)
    assert found.sha256 == hashlib.sha256(other.read_bytes()).hexdigest()
    assert set(weights_here()) == set(names)
    best = strongest_here()  # MobileNetV2 at alpha 0.5 has the highest ImageNet top-1 of the three
    assert (best.backbone.name, best.alpha, best.size) == ("mobilenetv2", 0.5, 224)


def test_adding_again_says_so_and_a_changed_file_replaces_the_copy(folders, tmp_path):
    _, ours = folders
    assert add_weights([str(MOBILENET_WEIGHTS)]) == [(MOBILENET_FILE, "added")]
    assert add_weights([str(MOBILENET_WEIGHTS)]) == [(MOBILENET_FILE, "already there")]
    changed = tmp_path / "changed" / MOBILENET_FILE
    changed.parent.mkdir()
    data = MOBILENET_WEIGHTS.read_bytes()
    changed.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert add_weights([str(changed)]) == [(MOBILENET_FILE, "replaced")]
    assert (ours / MOBILENET_FILE).read_bytes() == changed.read_bytes()


@pytest.mark.parametrize("bad", ["other name", "missing", "published hash differs"])
def test_nothing_is_copied_unless_every_file_passes(folders, tmp_path, monkeypatch, bad):
    import bneck.features.backbones.registry as registry

    _, ours = folders
    second = tmp_path / "given" / "mine.h5"
    second.parent.mkdir()
    shutil.copy(MOBILENET_WEIGHTS, second)
    if bad == "missing":
        second = tmp_path / "nowhere" / V2_FILE
    if bad == "published hash differs":  # the file named as official, but not the bytes Keras publishes
        second = second.rename(second.with_name(MOBILENET_FILE))
        entry = dataclasses.replace(get_backbone("mobilenet"), weights_md5="0" * 32)
        monkeypatch.setitem(registry.BACKBONES, "mobilenet", entry)
    with pytest.raises(WeightsError) as refused:
        add_weights([str(WEIGHTS / V2_FILE), str(second)])
    said = str(refused.value)
    assert {
        "other name": "not named as an official Keras ImageNet weights file",
        "missing": "which is missing",
        "published hash differs": "Keras publishes",
    }[bad] in said
    assert not ours.exists() or not list(ours.iterdir())


@pytest.mark.pure
def test_every_official_name_maps_back_to_its_backbone_width_and_side():
    files = official_files()
    assert len({f.backbone.name for f in files.values()}) >= 35  # every family that publishes ImageNet weights
    for name, item in files.items():
        assert item.backbone.weights_file(item.alpha, item.size) == name
    assert files[MOBILENET_FILE].size == 224 and files[MOBILENET_FILE].alpha == 0.25


def test_the_command_finds_added_weights_from_any_folder_with_no_variable_set(tmp_path):
    """What the quick start leaves: `bneck weights add` once, then `bneck backbones` anywhere sees them."""
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_HOME", "BNECK_WEIGHTS", "XDG_DATA_HOME")}
    env["HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "bneck"]
    added = subprocess.run([*command, "weights", "add", str(WEIGHTS)], env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    assert (Path(env["HOME"]) / ".local/share/bneck/weights" / MOBILENET_FILE).is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run(
        [*command, "backbones", "--json"], env=env, cwd=elsewhere, capture_output=True, text=True, check=True
    )
    here = {b["name"]: b["weights_here_alphas"] for b in json.loads(shown.stdout)}
    assert here["mobilenet"] == [0.25] and here["mobilenetv2"] == [0.35, 0.5] and here["vgg16"] == []
    listed = subprocess.run([*command, "weights"], env=env, cwd=elsewhere, capture_output=True, text=True, check=True)
    assert "mobilenetv2 alpha 0.5 224 px" in listed.stdout and ".local/share/bneck/weights" in listed.stdout


@pytest.mark.parametrize("bad", ["not hdf5", "a fifo in the folder", "the same name twice"])
def test_a_file_that_cannot_be_weights_is_refused_before_anything_is_copied(folders, tmp_path, bad):
    _, ours = folders
    given = tmp_path / "given"
    given.mkdir()
    shutil.copy(MOBILENET_WEIGHTS, given / MOBILENET_FILE)
    paths = [str(given)]
    if bad == "not hdf5":
        (tmp_path / V2_FILE).write_text("not weights")
        paths.append(str(tmp_path / V2_FILE))
    elif bad == "a fifo in the folder":
        os.mkfifo(given / V2_FILE)
    else:
        paths.append(str(MOBILENET_WEIGHTS))
    with pytest.raises(WeightsError, match="not an HDF5 file|cannot be read|two files of the same name"):
        add_weights(paths)
    assert not ours.exists() or not list(ours.iterdir())


def test_the_folder_and_the_parents_it_creates_are_private_and_a_file_in_its_place_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BNECK_WEIGHTS", str(tmp_path / "a" / "b"))
    old = os.umask(0)
    try:
        add_weights([str(MOBILENET_WEIGHTS)])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("BNECK_WEIGHTS", str(tmp_path / "file"))
    with pytest.raises(WeightsError, match="set BNECK_WEIGHTS"):
        add_weights([str(MOBILENET_WEIGHTS)])
