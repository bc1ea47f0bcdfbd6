"""``bneck export``: one model that takes raw images and reproduces ``bneck predict``.

Every format is loaded by its own runtime in a fresh interpreter that never imports
bneck, fed images decoded as ``bneck-export.json`` describes (PIL, bilinear), and
compared with ``bneck predict``. scikit-learn models are folded into layers exactly:
checked against ``predict_proba`` on the feature files for every model that folds,
with and without PCA, pooled and flattened, two and three classes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bneck.features import extract, read_features
from bneck.pipeline.cli import main
from bneck.pipeline.export import ExportError, export_model
from bneck.pipeline.export.fold import FoldError, sklearn_layers
from bneck.pipeline.export.formats import ExportFormat, get_format, list_formats, register_format, unregister_format
from bneck.pipeline.predict import predict_images
from bneck.pipeline.training.sklearn_models import StreamedLinear, build_sklearn
from bneck.pipeline.training.stage import train
from tests.conftest import ROOT
from tests.generated import make_images


def _documented_decoding() -> str:
    """docs/export.md's ``bneck_input`` block: servers decode as the page says."""
    import re

    page = (ROOT / "docs" / "export.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "def bneck_input" in b)


SERVE = r"""
import json, sys
import numpy as np
from PIL import Image


def serve(folder, paths):
    meta = json.load(open(f"{folder}/bneck-export.json"))
    size, fmt, model = meta["input"]["shape"][1], meta["format"], f"{folder}/{meta['model']}"
    x = np.stack([bneck_input(p, size) for p in paths])  # docs/export.md's decoding rule
    if fmt == "keras":
        import keras
        out = keras.saving.load_model(model)(x)
    elif fmt == "savedmodel":
        import tensorflow as tf
        loaded = tf.saved_model.load(model)
        out = loaded.serve(tf.constant(x))
    elif fmt == "tflite":
        import tensorflow as tf
        it = tf.lite.Interpreter(model_path=model)
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], x.shape)
        it.allocate_tensors()
        it.set_tensor(inp["index"], x)
        it.invoke()
        out = it.get_tensor(it.get_output_details()[0]["index"])
    elif fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(model)
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        import openvino as ov
        out = ov.Core().compile_model(model, "CPU", meta["runtime_settings"]["openvino_compile_config"])(x)[0]
    return {"probabilities": np.asarray(out).tolist(), "labels": json.load(open(f"{folder}/labels.json"))}


folders, paths = json.loads(sys.argv[1]), sys.argv[2:]
served = {folder: serve(folder, paths) for folder in folders}
ours = sorted(n for n in sys.modules if n.split(".")[0] in ("bneck", "pipeline", "features"))
print(json.dumps({"served": served, "bneck_modules": ours}))
"""
# Each format once, spread over the kinds of model (a Keras head and three folded scikit-learn models).
CASES = [
    pytest.param("gap-dense", "keras", marks=pytest.mark.pure),
    pytest.param("linear-svm", "savedmodel", marks=pytest.mark.pure),
    pytest.param("logreg", "tflite", marks=pytest.mark.pure),
    pytest.param("mlp", "onnx", marks=pytest.mark.pure),
    pytest.param("gap-dense", "openvino", marks=pytest.mark.extra("openvino")),
]


@pytest.fixture(scope="module")
def tiny_image_root(tmp_path_factory):
    """Cats vs dogs, 40 generated images per class in train/validation/test."""
    return make_images(tmp_path_factory.mktemp("tiny_export") / "data", 40)


@pytest.fixture(scope="module")
def tiny_features_dir(tiny_image_root, tiny):
    """The tiny backbone's features (2x2x256 grids) of ``tiny_image_root``."""
    root = tiny_image_root.parent
    extract(tiny_image_root, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    return root / "features"


@pytest.fixture(scope="module")
def tiny_multiclass_features_dir(tiny, tmp_path_factory):
    """Three classes (cats, dogs, gray), 15 generated images each per split, pooled tiny-backbone features."""
    root = tmp_path_factory.mktemp("tiny_export_multi")
    data = make_images(root / "data", 15, classes=("cats", "dogs", "gray"))
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, pool="avg", **tiny)
    return root / "features"


@pytest.fixture(scope="module")
def tiny_models(tiny_features_dir, tmp_path_factory):
    """One folder per kind of model: a Keras head, the three folded scikit-learn ones and a kernel svm."""
    out = tmp_path_factory.mktemp("tiny_export_models")
    train(tiny_features_dir, ["gap-dense", "logreg", "linear-svm", "mlp", "svm"], out, verbose=False, epochs=5)
    return out


@pytest.fixture(scope="module")
def exported(request, tiny_models, tiny_image_root, tmp_path_factory):
    """Every case this session runs (not one it skips, such as openvino without its extra) exported with the
    CLI, then served by each format's own runtime in ONE fresh interpreter that never imports bneck (one
    TensorFlow start-up for all of them)."""
    runs = {
        (item.callspec.params["name"], item.callspec.params["fmt"])
        for item in request.session.items
        if item.originalname == "test_every_format_reproduces_predict_without_bneck"
        and item.get_closest_marker("skip") is None
    }
    out = tmp_path_factory.mktemp("exports")
    images = sorted((tiny_image_root / "test").glob("*/*.jpg"))[::8]
    (out / "16-bit").mkdir()
    for i, path in enumerate(images[:2]):  # 16-bit PNGs: decoded by the documented rule, never clipped
        gray = np.asarray(Image.open(path).convert("L"), np.uint16) * 257
        Image.fromarray(gray).save(out / "16-bit" / f"gray{i}.png")
        images.append(out / "16-bit" / f"gray{i}.png")
    folders = {}
    for name, fmt in (case.values for case in CASES):
        if (name, fmt) not in runs:
            continue
        folders[(name, fmt)] = out / f"{name}-{fmt}"
        assert (
            main(["export", str(tiny_models / name), "--out", str(folders[(name, fmt)]), "--format", fmt, "--quiet"])
            == 0
        )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cwd = out / "cwd"
    cwd.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _documented_decoding() + SERVE,
            json.dumps([str(f) for f in folders.values()]),
            *map(str, images),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folders, images, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name,fmt", CASES)
def test_every_format_reproduces_predict_without_bneck(exported, tiny_models, name, fmt):
    folders, images, result = exported
    out = folders[(name, fmt)]
    meta = json.loads((out / "bneck-export.json").read_text())
    assert meta["format"] == fmt and meta["check"]["max_abs_difference"] <= 1e-4
    assert "shifted right by 8" in meta["input"]["decode"]  # the one decoding rule, for servers
    assert "recorded images" in meta["check"]["images"]  # checked on the model's images, not noise
    assert result["bneck_modules"] == []
    served = result["served"][str(out)]
    ours = predict_images(str(tiny_models / name), [str(p) for p in images])
    assert served["labels"] == list(ours[0]["probabilities"])
    expected = np.array([list(r["probabilities"].values()) for r in ours])
    got = np.array(served["probabilities"])
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def _folds(est, x, y):
    import keras

    inp = keras.Input(x.shape[1:])
    model = keras.Model(inp, sklearn_layers(est, inp, int(y.max()) + 1))
    return np.asarray(model(x.astype(np.float32))), est.predict_proba(x)


@pytest.mark.pure
@pytest.mark.parametrize("name", ["logreg", "linear-svm", "mlp"])
@pytest.mark.parametrize("reshape,pca", [("avg", None), ("flatten", 12), ("max", None)])
def test_folded_models_equal_predict_proba_on_two_classes(tiny_features_dir, name, reshape, pca):
    train_, test = read_features(tiny_features_dir / "train.h5"), read_features(tiny_features_dir / "test.h5")
    est = build_sklearn(name, reshape, pca, seed=0, counts=np.bincount(train_.labels)).fit(
        train_.features, train_.labels
    )
    if pca:
        est.named_steps["pca"].whiten = True  # a whitened PCA folds too (set after fit: a harder map)
    got, expected = _folds(est, test.features, test.labels)
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.pure
@pytest.mark.parametrize("name", ["logreg", "linear-svm", "mlp"])
def test_folded_models_equal_predict_proba_on_three_classes(tiny_multiclass_features_dir, name):
    train_, test = (read_features(tiny_multiclass_features_dir / f"{s}.h5") for s in ("train", "test"))
    est = build_sklearn(
        name, "avg", 8 if name == "linear-svm" else None, seed=0, counts=np.bincount(train_.labels)
    ).fit(train_.features, train_.labels)
    got, expected = _folds(est, test.features, test.labels)
    assert got.shape == (len(test.labels), 3) and np.abs(got - expected).max() <= 1e-5


@pytest.mark.pure
@pytest.mark.parametrize("name", ["logreg", "linear-svm"])
def test_streamed_models_fold_or_are_refused(tiny_multiclass_features_dir, tiny_features_dir, name):
    for folder in (tiny_features_dir, tiny_multiclass_features_dir):
        train_, test = (read_features(folder / f"{s}.h5") for s in ("train", "test"))
        est = StreamedLinear(name, "avg", passes=3).fit_blocks(
            lambda rng: iter([(train_.features, train_.labels)]),  # noqa: B023 - called in this iteration
            np.unique(train_.labels),
        )
        if name == "logreg":  # SGD log loss: sigmoid, normalised one-vs-rest
            got, expected = _folds(est, test.features, test.labels)
            assert np.abs(got - expected).max() <= 1e-5
        else:  # modified Huber's clipped probabilities are not layers
            with pytest.raises(FoldError, match="SGDClassifier with 'modified_huber' loss"):
                _folds(est, test.features, test.labels)


@pytest.mark.pure
def test_models_that_are_not_layers_are_refused_before_any_folder(tiny_models, tmp_path, capsys):
    out = tmp_path / "svm-export"
    assert main(["export", str(tiny_models / "svm"), "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert "calibrated SVC" in said and "logreg, linear-svm and mlp" in said and "Traceback" not in said
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.pure
def test_format_mistakes_are_one_paragraph(tiny_models, tmp_path, capsys):
    assert main(["export", str(tiny_models / "logreg"), "--out", str(tmp_path / "x"), "--format", "ONX"]) == 2
    said = capsys.readouterr().err
    assert "--format must be one of" in said and all(f in said for f in list_formats())
    assert "Did you mean 'onnx'?" in said
    assert not (tmp_path / "x").exists()


@pytest.fixture
def nudged_keras():
    """The keras format under another name, its runner's probabilities nudged past the tolerance."""
    keras_format = get_format("keras")

    def off_by_a_little(path):  # the written model, read back by Keras, then moved by 3e-4
        run = keras_format.runner(path)
        return lambda x: run(x) + np.array([3e-4, -3e-4])

    register_format(ExportFormat("keras-nudged", "model.keras", keras_format.write, off_by_a_little))
    yield "keras-nudged"
    unregister_format("keras-nudged")


@pytest.mark.pure
def test_an_export_that_does_not_reproduce_predict_is_not_kept(tiny_models, tmp_path, nudged_keras):
    with pytest.raises(ExportError, match="differ by up to 0.0003"):
        export_model(str(tiny_models / "logreg"), str(tmp_path / "bad"), nudged_keras, verbose=False)
    assert not (tmp_path / "bad").exists() and os.listdir(tmp_path) == []


@pytest.mark.pure
def test_reexport_replaces_only_its_own_files_and_refuses_a_folder_holding_the_users(tiny_models, tmp_path, capsys):
    out = tmp_path / "deploy"
    assert main(["export", str(tiny_models / "logreg"), "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "bneck-export.json").read_text())
    assert set(meta["files"]) == {"model.keras", "labels.json", "bneck-export.json"}
    assert set(meta["sha256"]) == {"model.keras", "labels.json"}  # every file but the listing itself, hashed
    # an export again into its own folder replaces it
    assert main(["export", str(tiny_models / "mlp"), "--out", str(out), "--format", "onnx", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".bneck-folder.json",
        "bneck-export.json",
        "labels.json",
        "model.onnx",
    ]
    # a user's notes beside it are never deleted: the export is refused instead, before any work
    (out / "NOTES.md").write_text("mine")
    (out / "conf").mkdir()
    assert main(["export", str(tiny_models / "logreg"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "also holds NOTES.md, conf" in err and "Traceback" not in err
    assert (out / "NOTES.md").read_text() == "mine" and (out / "model.onnx").exists()


@pytest.mark.pure
def test_staging_folders_a_killed_export_left_are_removed_by_the_next_one(tiny_models, tmp_path):
    from bneck.core.folders import write_marker

    out = tmp_path / "deploy"
    dead, alive, foreign = (tmp_path / f".deploy.tmp-{pid}-0123abcd" for pid in (999999999, os.getpid(), 999999998))
    for folder in (dead, alive, foreign):
        folder.mkdir()
        (folder / "model.keras").write_bytes(b"half written")
    write_marker(str(dead), "export")
    write_marker(str(alive), "export")  # a live process's: not ours to judge
    export_model(str(tiny_models / "logreg"), str(out), "keras", verbose=False)
    assert not dead.exists() and alive.exists() and foreign.exists()  # foreign: no marker, never deleted


@pytest.mark.pure
@pytest.mark.parametrize(
    "where,said", [("afile/sub", "is a regular file, not a folder"), ("/proc/bneck-export-test", "cannot be created")]
)
def test_an_out_that_cannot_be_made_is_one_paragraph_before_any_work(tiny_models, tmp_path, capsys, where, said):
    (tmp_path / "afile").write_text("x")
    out = where if where.startswith("/") else str(tmp_path / where)
    assert main(["export", str(tiny_models / "logreg"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.pure
def test_a_manifest_nested_past_any_parser_is_refused_not_a_traceback(tiny_models, tmp_path, capsys):
    import shutil

    evil = tmp_path / "evil"
    shutil.copytree(tiny_models / "logreg", evil)
    (evil / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    for argv in (["export", str(evil), "--out", str(tmp_path / "o")], ["predict", str(evil), str(evil)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "manifest" in err


def test_exporting_a_folded_model_prints_no_tensorflow_start_up_lines(tiny_models, tmp_path):
    """Issue 27: exporting logreg printed TensorFlow's C++ lines (a false "CUDA error" among them): the
    folding imported Keras before bneck's quiet import."""
    from bneck.core.tfimport import _NOISE

    done = subprocess.run(
        [sys.executable, "-m", "bneck", "export", str(tiny_models / "logreg"), "--out", str(tmp_path / "e")],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    noise = [line for line in done.stderr.splitlines(keepends=True) if _NOISE.match(line)]
    assert noise == [] and b"cuInit" not in done.stderr
