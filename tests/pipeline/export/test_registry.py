"""The export-format registry: a format registered from this file alone exports end to end through
``bneck.export`` and the command line; one whose package is missing is listed and refused with its
install command before any folder is made; a name is registered once; an unknown one gets the closest.

Every format registered here is removed again by its fixture: other tests see the built-in set only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import bneck
from bneck.core.errors import ConfigError
from bneck.features import extract
from bneck.pipeline.cli import main
from bneck.pipeline.export.formats import ExportFormat, get_format, list_formats, register_format, unregister_format
from bneck.pipeline.training.stage import train
from tests.generated import make_images

pytestmark = pytest.mark.pure

BUILT_IN = ("keras", "savedmodel", "tflite", "onnx", "openvino")
NPZ, FOLDER = "npz-keras", "npz_model"
SETTINGS = {"loader": "keras.models.model_from_json, then set_weights from weights.npz"}
MISSING = "bneck_test_no_such_runtime"


def write_npz(model, path):
    """A folder format: the architecture as JSON, the weights as arrays (no Keras file at all)."""
    os.mkdir(path)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as handle:
        handle.write(model.to_json())
    np.savez(os.path.join(path, "weights.npz"), *model.get_weights())


def run_npz(path):
    """What a service would do: rebuild from the JSON with Keras alone, set the arrays, run."""
    import keras

    with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
        model = keras.models.model_from_json(handle.read())
    with np.load(os.path.join(path, "weights.npz")) as weights:
        model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
    return lambda x: np.asarray(model(x, training=False))


@pytest.fixture(scope="module")
def tiny_image_root(tmp_path_factory):
    """Cats vs dogs, 40 generated images per class in train/validation/test."""
    return make_images(tmp_path_factory.mktemp("tiny_registry") / "data", 40)


@pytest.fixture(scope="module")
def tiny_models(tiny_image_root, tiny):
    """A logreg trained on the tiny backbone's features of ``tiny_image_root``."""
    root = tiny_image_root.parent
    extract(tiny_image_root, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    train(root / "features", ["logreg"], root / "models", verbose=False)
    return root / "models"


@pytest.fixture
def npz_format():
    """The test format, registered for one test; returns the (step, path) calls export made to it."""
    calls = []

    def write(model, path):
        calls.append(("write", path))
        write_npz(model, path)

    def runner(path):
        calls.append(("runner", path))
        return run_npz(path)

    register_format(ExportFormat(NPZ, FOLDER, write, runner, runtime_settings=SETTINGS))
    yield calls
    unregister_format(NPZ)
    assert list_formats() == BUILT_IN


@pytest.fixture
def ghost_format():
    """A format whose runtime is not installed (numpy is; MISSING is not)."""

    def never(*_):
        raise AssertionError("a format whose package is missing was used")

    register_format(ExportFormat("ghost", "model.ghost", never, never, needs=("numpy", MISSING), extra="ghost-runtime"))
    yield "ghost"
    unregister_format("ghost")
    assert list_formats() == BUILT_IN


def test_the_built_in_formats_are_registered_in_order_and_importing_them_imports_no_runtime():
    assert list_formats() == BUILT_IN
    assert get_format("openvino").runtime_settings == {"openvino_compile_config": {"INFERENCE_PRECISION_HINT": "f32"}}
    code = (
        "import sys, bneck.pipeline.export.formats as f; f.get_format('onnx'); f.get_format('openvino'); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'onnx', 'onnxruntime', "
        "'tf2onnx', 'openvino'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_format_registered_from_a_test_file_exports_end_to_end(
    tiny_models, tiny_image_root, tmp_path, npz_format, capsys, monkeypatch
):
    out = tmp_path / "deploy"
    meta = bneck.export(str(tiny_models / "logreg"), str(out), fmt=NPZ, verbose=False)
    assert sorted(p.name for p in out.iterdir()) == [".bneck-folder.json", "bneck-export.json", "labels.json", FOLDER]
    assert sorted(os.listdir(out / FOLDER)) == ["config.json", "weights.npz"]
    assert json.loads((out / "bneck-export.json").read_text()) == meta
    assert meta["format"] == NPZ and meta["model"] == FOLDER and meta["runtime_settings"] == SETTINGS
    assert set(meta["sha256"]) == {f"{FOLDER}/config.json", f"{FOLDER}/weights.npz", "labels.json"}
    assert "recorded images" in meta["check"]["images"] and meta["check"]["max_abs_difference"] <= 1e-4
    # export wrote with the format's own write, then checked with its own runner, in the staging folder
    (step1, written), (step2, checked) = npz_format
    assert (step1, step2) == ("write", "runner") and written == checked
    assert os.path.basename(written) == FOLDER and os.path.dirname(written) != str(out)
    # what was kept, run by the format's runner alone, equals bneck.predict
    images = sorted((tiny_image_root / "test").glob("*/*.jpg"))[::8]
    names, rows = bneck.predict(str(tiny_models / "logreg"), [str(p) for p in images])
    expected = np.array([[row["probabilities"][n] for n in names] for row in rows])
    size = meta["input"]["shape"][1]
    x = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR), np.uint8) for p in images]
    )
    got = run_npz(str(out / FOLDER))(x)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4
    assert json.loads((out / "labels.json").read_text()) == names
    # the command line offers it too (wide enough that argparse does not wrap the name at its hyphen)
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert f"one of: keras, savedmodel, tflite, onnx, openvino, {NPZ} (default: keras)" in capsys.readouterr().out


def test_a_format_whose_package_is_missing_is_listed_and_refused_before_any_folder(
    tiny_models, tmp_path, capsys, ghost_format
):
    assert ghost_format in list_formats()
    out = tmp_path / "deploy"
    with pytest.raises(ConfigError) as caught:
        bneck.export(str(tiny_models / "logreg"), str(out), fmt=ghost_format, verbose=False)
    said = str(caught.value)
    assert "\n" not in said and f"format ghost needs the Python package(s) {MISSING}," in said
    assert 'pip install -e ".[ghost-runtime]"' in said and f"pip install {MISSING})" in said
    assert "numpy" not in said and "choose another format: keras, savedmodel, tflite" in said
    assert main(["export", str(tiny_models / "logreg"), "--out", str(out), "--format", ghost_format]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_a_name_is_registered_once(npz_format):
    first = get_format(NPZ)
    with pytest.raises(ConfigError, match=f"export format '{NPZ}' is already registered"):
        register_format(ExportFormat(NPZ, "other.keras", write_npz, run_npz))
    with pytest.raises(ConfigError, match="export format 'keras' is already registered"):
        register_format(ExportFormat("keras", "model.keras", write_npz, run_npz))
    assert get_format(NPZ) is first and get_format("keras").write is not write_npz
    with pytest.raises(ConfigError, match="must write one file or folder"):
        register_format(ExportFormat("nested", "a/model.keras", write_npz, run_npz))
    assert list_formats() == (*BUILT_IN, NPZ)


def test_an_unknown_name_gets_the_closest_registered_one(tiny_models, tmp_path, npz_format):
    with pytest.raises(ConfigError) as caught:
        bneck.export(str(tiny_models / "logreg"), str(tmp_path / "x"), fmt="npz_kera", verbose=False)
    said = str(caught.value)
    assert (
        said.startswith(f"format must be one of 'keras', 'savedmodel', 'tflite', 'onnx', 'openvino', '{NPZ}'.")
        and "Did you mean 'npz-keras'?" in said
    )
    with pytest.raises(ConfigError, match="Did you mean 'tflite'"):
        get_format("TFLight")
    with pytest.raises(ConfigError, match="export format must be one of"):
        unregister_format("never-registered")
    assert os.listdir(tmp_path) == []
