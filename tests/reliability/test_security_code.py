"""No code from a folder ever runs, whatever a handed model folder holds.

Every attack builds a hostile model folder from a real one and then re-signs its
manifest to match, as an attacker would (a manifest a folder writes about itself
authenticates nothing). Each folder is handed to every command that loads models,
in a real process. The payloads would create a marker file; for every attack and
every command the outcome must be the same: exit 2, one paragraph naming the folder,
no traceback, no marker.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from bneck.core.folders import MARKER
from bneck.core.hashing import sha256_file
from bneck.features import extract
from bneck.pipeline import train
from bneck.pipeline.artifacts import load_classifier
from tests.generated import make_images
from tests.reliability.payloads import Payload, Planted

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("code")
    data = make_images(root / "data", 3)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    train(
        root / "features",
        ["dense", "logreg", "random-forest", "hist-gradient-boosting", "svm"],
        root / "models",
        epochs=2,
        verbose=False,
    )
    return root


def resign(folder: Path, version: int = 2) -> None:
    """Rewrite the manifest so that it lists, and matches, what the folder now holds."""
    manifest = json.loads((folder / "manifest.json").read_text())
    names = sorted(n for n in os.listdir(folder) if n != "manifest.json" and (version == 2 or n[0] != "."))
    manifest["artifacts"] = {n: sha256_file(str(folder / n)) for n in names}
    manifest["manifest_version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _set(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


# --- attacks on scikit-learn folders ----------------------------------------------------------


def pickle_in_an_old_format_folder(folder: Path, marker: str) -> None:
    """A bneck 0.1 folder: model.joblib is a pickle that runs code when loaded."""
    (folder / "model.skops").unlink()
    (folder / MARKER).unlink()
    (folder / "model.joblib").write_bytes(pickle.dumps(Planted(marker)))
    _set(folder, model_file="model.joblib")
    resign(folder, version=1)


def pickle_named_model_skops(folder: Path, marker: str) -> None:
    (folder / "model.skops").write_bytes(pickle.dumps(Planted(marker)))
    resign(folder)


def pickle_named_by_the_manifest(folder: Path, marker: str) -> None:
    (folder / "model.joblib").write_bytes(pickle.dumps(Planted(marker)))
    _set(folder, model_file="model.joblib")
    resign(folder)


def skops_file_with_an_untrusted_type(folder: Path, marker: str) -> None:
    import skops.io as sio

    (folder / "model.skops").write_bytes(sio.dumps(Payload(marker)))
    resign(folder)


def skops_file_with_a_function(folder: Path, marker: str) -> None:
    import skops.io as sio

    (folder / "model.skops").write_bytes(sio.dumps({"clf": os.system, "arg": f"touch {marker}"}))
    resign(folder)


def _edit_skops_arrays(folder: Path, cls: str, field: str, change) -> None:
    """Change one array of every ``cls`` object inside the skops file (in place, re-signed)."""
    path = folder / "model.skops"
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    schema, files = json.loads(members["schema.json"]), []

    def walk(node):
        if isinstance(node, dict):
            content = node.get("content", {})
            state = content.get("content") if isinstance(content, dict) else None
            if node.get("__class__") == cls and isinstance(state, dict) and field in state:  # fitted ones
                files.append(state[field]["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert files, (cls, field)
    for name in files:
        array = np.load(io.BytesIO(members[name]), allow_pickle=False)
        change(array)
        out = io.BytesIO()
        np.save(out, array, allow_pickle=False)
        members[name] = out.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    resign(folder)


def forest_tree_child_pointing_outside(folder: Path, marker: str) -> None:
    """A random forest's tree whose root's children point 2^40 nodes away (an out-of-bounds read)."""

    def change(nodes):
        nodes["left_child"][0] = nodes["right_child"][0] = nodes["feature"][0] = 2**40

    _edit_skops_arrays(folder, "Tree", "nodes", change)


def boosted_tree_child_pointing_outside(folder: Path, marker: str) -> None:
    def change(nodes):
        nodes["is_leaf"][0] = 0
        nodes["left"][0] = nodes["right"][0] = nodes["feature_idx"][0] = 2**31 - 5

    _edit_skops_arrays(folder, "TreePredictor", "nodes", change)


def svm_support_counts_that_disagree(folder: Path, marker: str) -> None:
    _edit_skops_arrays(folder, "SVC", "_n_support", lambda counts: counts.__setitem__(0, counts[0] + 10**6))


# --- attacks on Keras folders -----------------------------------------------------------------


def _feature_shape(folder: Path) -> tuple:
    """The shape of the features the folder's head takes: a hostile head takes the same."""
    return tuple(json.loads((folder / "manifest.json").read_text())["feature_shape"])


def _save_keras(model, folder: Path) -> None:
    model.save(folder / "model.keras")
    resign(folder)


def keras_lambda_with_bytecode(folder: Path, marker: str) -> None:
    import keras

    inputs = keras.Input(_feature_shape(folder))
    payload = eval(f"lambda t: (open({marker!r}, 'w').close(), t)[1]")  # no closure: serialisable
    x = keras.layers.Lambda(payload)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    _save_keras(keras.Model(inputs, outputs), folder)
    Path(marker).unlink(missing_ok=True)  # tracing the Lambda above ran it once, here, on purpose


def keras_lambda_with_an_importable_function(folder: Path, marker: str) -> None:
    """A Lambda naming a module-level function: no bytecode, so safe_mode alone lets it through."""
    import keras

    from tests.reliability import payloads

    os.environ["BNECK_TEST_MARKER"] = marker
    shape = _feature_shape(folder)
    inputs = keras.Input(shape)
    x = keras.layers.Lambda(payloads.touch_marker, output_shape=shape)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    _save_keras(keras.Model(inputs, outputs), folder)
    Path(marker).unlink(missing_ok=True)


def _rewrite_archive(folder: Path, change) -> None:
    members = {}
    with zipfile.ZipFile(folder / "model.keras") as zf:
        for name in zf.namelist():
            members[name] = zf.read(name)
    change(members)
    with zipfile.ZipFile(folder / "model.keras", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    resign(folder)


def keras_archive_with_an_extra_member(folder: Path, marker: str) -> None:
    _rewrite_archive(folder, lambda m: m.__setitem__("assets/payload.py", f"open({marker!r}, 'w')".encode()))


def keras_config_naming_load_model(folder: Path, marker: str) -> None:
    """CVE-2025-9906's shape: a Lambda whose function is keras.models.load_model, safe_mode off."""

    def change(members):
        config = json.loads(members["config.json"])
        gadget = {
            "module": "keras.layers",
            "class_name": "Lambda",
            "config": {
                "name": "gadget",
                "function": {
                    "module": "keras.models",
                    "class_name": "function",
                    "config": "load_model",
                    "registered_name": "function",
                },
                "arguments": {"safe_mode": False},
            },
            "registered_name": None,
        }
        config["config"]["layers"].append(gadget)
        members["config.json"] = json.dumps(config).encode()

    _rewrite_archive(folder, change)


def keras_weights_with_an_external_link(folder: Path, marker: str) -> None:
    def change(members):
        buffer = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buffer, "a") as f:
            f["leak"] = h5py.ExternalLink("/etc/hostname", "/")
        members["model.weights.h5"] = buffer.getvalue()

    _rewrite_archive(folder, change)


SKLEARN_ATTACKS = [
    pickle_in_an_old_format_folder,
    pickle_named_model_skops,
    pickle_named_by_the_manifest,
    skops_file_with_an_untrusted_type,
    skops_file_with_a_function,
    forest_tree_child_pointing_outside,
    boosted_tree_child_pointing_outside,
    svm_support_counts_that_disagree,
]
SOURCES = {
    forest_tree_child_pointing_outside: "random-forest",
    boosted_tree_child_pointing_outside: "hist-gradient-boosting",
    svm_support_counts_that_disagree: "svm",
}
KERAS_ATTACKS = [
    keras_lambda_with_bytecode,
    keras_lambda_with_an_importable_function,
    keras_archive_with_an_extra_member,
    keras_config_naming_load_model,
    keras_weights_with_an_external_link,
]


def _hostile(trained: Path, tmp_path: Path, attack) -> tuple[Path, Path]:
    source = SOURCES.get(attack, "logreg" if attack in SKLEARN_ATTACKS else "dense")
    folder = tmp_path / f"hostile-{source}"
    shutil.copytree(trained / "models" / source, folder)
    marker = tmp_path / "pwned"
    attack(folder, str(marker))
    assert not marker.exists()
    return folder, marker


def _commands(trained: Path, folder: Path, tmp_path: Path) -> dict:
    return {
        "evaluate": ["evaluate", folder, trained / "features" / "test.h5"],
        "predict": ["predict", folder, trained / "data" / "test" / "cats"],
        "finetune": [
            "finetune",
            folder,
            "--data",
            trained / "data",
            "--out",
            tmp_path / "ft",
            "--epochs",
            "1",
            "--quiet",
        ],
    }


@pytest.mark.parametrize("attack", SKLEARN_ATTACKS + KERAS_ATTACKS, ids=lambda a: a.__name__)
def test_hostile_model_folders_never_run_code(trained, tmp_path, bneck, attack):
    folder, marker = _hostile(trained, tmp_path, attack)
    for command, args in _commands(trained, folder, tmp_path).items():
        done = bneck(tmp_path, args, env={"BNECK_TEST_MARKER": str(marker)})
        assert done.returncode == 2, (command, done.output)
        assert "Traceback" not in done.output and str(folder) in done.output, (command, done.output)
        assert not marker.exists(), (attack.__name__, command)
    assert not (tmp_path / "ft").exists()  # refused before any work


def test_the_old_pickle_format_says_how_to_retrain_or_convert(trained, tmp_path, bneck):
    folder, marker = _hostile(trained, tmp_path, pickle_in_an_old_format_folder)
    done = bneck(tmp_path, ["evaluate", folder, trained / "features" / "test.h5"])
    assert done.returncode == 2 and "older bneck" in done.output
    assert "bneck train" in done.output and "--trust-pickle" in done.output
    done = bneck(tmp_path, ["convert", folder])  # no flag: the pickle is not loaded
    assert done.returncode == 2 and "--trust-pickle" in done.output and not marker.exists()
    assert not (tmp_path / "hostile-logreg-converted").exists()


def test_convert_with_trust_pickle_rewrites_a_real_old_folder_without_pickles(trained, tmp_path, bneck):
    import joblib

    old = tmp_path / "old-logreg"
    shutil.copytree(trained / "models" / "logreg", old)
    model = load_classifier(str(old)).model
    joblib.dump(model, old / "model.joblib")
    (old / "model.skops").unlink()
    (old / MARKER).unlink()
    _set(old, model_file="model.joblib")
    resign(old, version=1)
    done = bneck(tmp_path, ["convert", old, "--trust-pickle", "--out", tmp_path / "new"])
    assert done.returncode == 0, done.output
    new = load_classifier(str(tmp_path / "new"))
    assert "model.joblib" not in os.listdir(tmp_path / "new") and new.manifest.converted_from["trusted_pickle"]
    x = np.random.default_rng(0).normal(size=(5, *new.manifest.feature_shape)).astype(np.float32)
    np.testing.assert_array_equal(new.model.predict_proba(x), model.predict_proba(x))
    assert sorted(os.listdir(old)) == sorted(
        ["manifest.json", *json.loads((old / "manifest.json").read_text())["artifacts"]]
    )  # the old folder is left as it was


@pytest.mark.parametrize(
    "attack",
    [pickle_named_model_skops, keras_lambda_with_an_importable_function, boosted_tree_child_pointing_outside],
    ids=lambda a: a.__name__,
)
def test_a_run_folder_holding_a_hostile_model_retrains_it_and_runs_nothing(trained, tmp_path, bneck, tiny, attack):
    name = SOURCES.get(attack, "logreg" if attack in SKLEARN_ATTACKS else "dense")
    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{trained / "data"}"\nout = "{tmp_path / "run"}"\n'
        f'[extract]\nbackbone = "mobilenet"\nalpha = 0.25\nsize = {tiny["size"]}\n'
        f"weights = {json.dumps(tiny['weights'])}\n"
        f"[train]\nclassifiers = {json.dumps(sorted({'dense', name}))}\nepochs = 2\n"
        f"[finetune]\nenabled = false\n"
    )
    assert bneck(tmp_path, ["run", config, "--quiet"]).returncode == 0
    folder = tmp_path / "run" / "models" / name
    marker = tmp_path / "pwned"
    attack(folder, str(marker))
    done = bneck(tmp_path, ["run", tmp_path / "run" / "config.toml", "--quiet"], env={"BNECK_TEST_MARKER": str(marker)})
    assert done.returncode == 0, done.output
    assert not marker.exists()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert not run["stages"]["train"][name]["reused"]  # retrained, not loaded
    load_classifier(str(folder))  # and now a clean folder again


def test_a_changed_byte_in_a_model_file_is_refused_by_the_command_line(trained, tmp_path, bneck):
    folder = tmp_path / "logreg"
    shutil.copytree(trained / "models" / "logreg", folder)
    data = bytearray((folder / "model.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.skops").write_bytes(bytes(data))
    done = bneck(tmp_path, ["predict", folder, trained / "data" / "test"])
    assert done.returncode == 2 and "does not match its manifest" in done.output and "Traceback" not in done.output
