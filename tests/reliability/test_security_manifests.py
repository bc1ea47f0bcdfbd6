"""What a handed model folder's data can do (round 2 of the outside attack): its manifest's fields, its
model's arrays, its archive's sizes, its record of images and its hint of where the weights are.

Each attack changes a real folder and re-signs it, as an attacker would. Every command that loads
models must refuse it in one paragraph (exit 2, no traceback), never read outside the data folder,
never hang, never inflate a bomb.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from bneck.core.files import NotRegularFile, open_regular
from bneck.features import extract
from bneck.pipeline import train
from tests.conftest import MOBILENET_FILE, ROOT
from tests.generated import make_images
from tests.reliability.test_security_code import _edit_skops_arrays, _set, resign

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("manifests")
    data = make_images(root / "data", 3)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    train(root / "features", ["dense", "logreg"], root / "models", epochs=2, verbose=False)
    return root


def _manifest_change(**changes):
    def attack(folder: Path, marker: str) -> None:
        _set(folder, **changes)
        resign(folder)

    attack.__name__ = "manifest_" + "_".join(f"{k}" for k in changes)
    return attack


def _drop(field):
    def attack(folder: Path, marker: str) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        if field in manifest:
            del manifest[field]
        else:
            del manifest["extractor"][field]
        (folder / "manifest.json").write_text(json.dumps(manifest))
        resign(folder)

    attack.__name__ = f"manifest_without_{field}"
    return attack


def _arrays(cls, field, change, name):
    def attack(folder: Path, marker: str) -> None:
        _edit_skops_arrays(folder, cls, field, change)

    attack.__name__ = name
    return attack


def _numbers(change):
    def apply(array):
        array[...] = change(array)

    return apply


MANIFEST_ATTACKS = [
    _manifest_change(class_names=5),
    _manifest_change(class_names=["cats"]),
    _manifest_change(class_names=[{"a": 1}, {"b": 2}]),
    _manifest_change(class_names="cd"),
    _manifest_change(kind=["sklearn"]),
    _manifest_change(feature_shape=[7, 7, -256]),
    _manifest_change(feature_shape=[100000, 100000, 3]),
    _manifest_change(extractor="mobilenet"),
    _manifest_change(feature_files={"train": "/etc/passwd"}),
    _manifest_change(config=[]),
    _drop("extractor"),
    _drop("extractor_key"),
    _drop("weights_sha256"),
]
ARRAY_ATTACKS = [  # logreg folders: reshape -> scale -> classifier (a calibrated or plain logistic regression)
    _arrays("StandardScaler", "scale_", _numbers(lambda a: a * float("nan")), "scaler_scale_is_nan"),
    _arrays("LogisticRegression", "coef_", _numbers(lambda a: a * float("inf")), "coef_is_infinite"),
    _arrays("LogisticRegression", "classes_", _numbers(lambda a: a + 7), "classes_renamed"),
]


@pytest.mark.parametrize("attack", MANIFEST_ATTACKS + ARRAY_ATTACKS, ids=lambda a: a.__name__)
def test_hostile_fields_and_arrays_are_refused_by_every_command(trained, tmp_path, bneck, attack):
    source = "logreg" if attack in ARRAY_ATTACKS else "dense"  # the arrays are a logistic regression's
    folder = tmp_path / f"hostile-{source}"
    shutil.copytree(trained / "models" / source, folder)
    attack(folder, str(tmp_path / "pwned"))
    for args in (
        ["evaluate", folder, trained / "features" / "test.h5"],
        ["predict", folder, trained / "data" / "test" / "cats"],
    ):
        done = bneck(tmp_path, args)
        assert done.returncode == 2, (args[0], done.output)
        assert "Traceback" not in done.output and str(folder) in done.output, (args[0], done.output)


def test_a_scaler_of_another_width_and_three_classes_for_two_names_are_refused(trained, tmp_path, bneck):
    """Arrays whose shapes disagree with each other: found by predicting once, at load, not later."""
    import numpy as np
    import skops.io as sio

    from bneck.pipeline.model_io import TRUSTED_SKLEARN_TYPES

    for name, change in (
        ("narrow", lambda m: setattr(m.steps[1][1], "scale_", np.ones(3))),
        ("three", lambda m: setattr(m.steps[-1][1], "classes_", np.arange(3))),
    ):
        folder = tmp_path / name
        shutil.copytree(trained / "models" / "logreg", folder)
        model = sio.loads((folder / "model.skops").read_bytes(), trusted=list(TRUSTED_SKLEARN_TYPES))
        change(model)
        (folder / "model.skops").write_bytes(sio.dumps(model))
        resign(folder)
        done = bneck(tmp_path, ["predict", folder, trained / "data" / "test" / "cats"])
        assert done.returncode == 2 and "does not work as a bneck model" in done.output, done.output


def test_a_zip_bomb_in_a_keras_model_is_refused_before_it_inflates(trained, tmp_path, bneck):
    folder = tmp_path / "bomb"
    shutil.copytree(trained / "models" / "dense", folder)
    with zipfile.ZipFile(folder / "model.keras") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with zipfile.ZipFile(folder / "model.keras", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", members["config.json"])
        zf.writestr("metadata.json", members["metadata.json"])
        with zf.open("model.weights.h5", "w", force_zip64=True) as member:
            zero = bytes(64 << 20)
            for _ in range(16):  # 1 GB of zeros: about 1 MB stored
                member.write(zero)
    resign(folder)
    assert (folder / "model.keras").stat().st_size < 8 << 20
    done = bneck(tmp_path, ["evaluate", folder, trained / "features" / "test.h5"])
    assert done.returncode == 2 and "zip bomb" in done.output, done.output


def _resign_splits(folder: Path, change) -> None:
    record = json.loads((folder / "splits.json").read_text())
    change(record)
    (folder / "splits.json").write_text(json.dumps(record))
    resign(folder)


@pytest.mark.parametrize("escape", ["outside", "absolute", "link", "kmsg"])
def test_a_record_of_images_that_leaves_the_data_folder_is_refused_before_reading(trained, tmp_path, bneck, escape):
    secret = tmp_path / "secret" / "private_photo.jpg"
    secret.parent.mkdir()
    shutil.copy(next((trained / "data" / "test" / "cats").iterdir()), secret)
    data = tmp_path / "data"
    shutil.copytree(trained / "data", data)
    folder = tmp_path / "dense"
    shutil.copytree(trained / "models" / "dense", folder)
    path = {
        "outside": "../secret/private_photo.jpg",
        "absolute": str(secret),
        "link": "test/cats/link.jpg",
        "kmsg": "../../../../../../proc/kmsg",
    }[escape]
    os.symlink(secret, data / "test" / "cats" / "link.jpg")
    sha = hashlib.sha256(secret.read_bytes()).hexdigest()

    def change(record):
        record["splits"]["test"]["paths"].append(path)
        record["splits"]["test"]["sha256"].append(sha)
        record["splits"]["test"]["labels"].append(0)

    _resign_splits(folder, change)
    done = bneck(tmp_path, ["finetune", folder, "--data", data, "--out", tmp_path / "ft", "--epochs", "1", "--quiet"])
    assert done.returncode == 2 and "leave the data folder" in done.output, done.output
    assert not (tmp_path / "ft").exists()


def _bneck_with_timeout(args, cwd, timeout=120, env=None):
    """A real process with a deadline: what must never hang is run where a hang fails the test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "bneck", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_weights_hint_never_reads_a_file_that_is_not_a_weights_file(trained, tmp_path, tiny):
    """The manifest's weights_path is a hint: a secret, a FIFO, or a pseudo-file named like weights are
    never read (no hang, no hash of the secret printed)."""
    home = tmp_path / "keras_home"  # 'imagenet', tried after any hints, is found here (another sha256): no download
    (home / "models").mkdir(parents=True)
    shutil.copy(tiny["weights"], home / "models" / MOBILENET_FILE)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:$6$...:19000:0:99999:7:::\n")
    fifo = tmp_path / "weights.h5"
    os.mkfifo(fifo)
    os.symlink("/proc/self/pagemap", tmp_path / "pagemap.h5")
    folder = tmp_path / "logreg"
    shutil.copytree(trained / "models" / "logreg", folder)
    for hint in (str(secret), str(fifo), str(tmp_path / "pagemap.h5"), "/proc/kmsg"):
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["weights_path"] = hint
        manifest["extractor"]["weights_sha256"] = "0" * 64  # no real weights file matches: hints are tried
        (folder / "manifest.json").write_text(json.dumps(manifest))
        resign(folder)
        done = _bneck_with_timeout(
            ["predict", folder, trained / "data" / "test" / "cats"], tmp_path, env={"KERAS_HOME": str(home)}
        )
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert hashlib.sha256(secret.read_bytes()).hexdigest()[:12] not in output


def test_opening_a_pseudo_file_never_waits_and_never_reads_gigabytes():
    for path in ("/proc/self/pagemap", "/proc/kmsg"):
        if not os.path.exists(path):
            continue
        outcome = []

        def attempt(path=path, outcome=outcome):  # bound now: the thread runs within this iteration
            try:
                with open_regular(path) as handle:
                    outcome.append(handle.read(1 << 20))
            except (NotRegularFile, PermissionError) as exc:
                outcome.append(exc)

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(10)
        assert outcome and isinstance(outcome[0], OSError), (path, outcome[:1])
