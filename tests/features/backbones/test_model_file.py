"""Your own Keras model as the backbone: ``--backbone PATH.keras``.

The model files are built here with plain Keras (a small residual convolutional network with a free
input side, as a user would save one); what bneck computes is compared with what Keras computes
from the same file, and every way a file could carry code is refused before any work.
"""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from bneck import BneckError, extract, read_features
from bneck.features.backbones.keras_archive import UnsafeModel
from bneck.pipeline.cli import main
from tests.generated import make_images

pytestmark = pytest.mark.pure
SIZE = 64


def _network(first=None):
    """A functional model on any square RGB side: rescaling, convolutions, a residual sum, pooling."""
    keras.utils.set_random_seed(2)
    image = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255.0)(image)
    x = first(x) if first is not None else x
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(x)
    x = keras.layers.BatchNormalization()(x)
    for stage, width in enumerate((16, 24)):  # two stages ending in residual sums, at 16 and 8 px
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"down_{stage}")(x)
        y = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv_{stage}")(x)
        x = keras.layers.Add(name=f"residual_{stage}")([x, y])
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="top")(x)
    return keras.Model(image, keras.layers.GlobalAveragePooling2D(name="embedding")(x))


@pytest.fixture
def own_model(tmp_path):
    path = tmp_path / "models" / "mine.keras"
    path.parent.mkdir()
    _network().save(path)
    return path


def _pixels(data, paths) -> np.ndarray:
    images = [Image.open(data / p).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR) for p in paths]
    return np.stack([np.asarray(im, dtype="float32") for im in images])


def test_a_model_file_extracts_what_keras_computes_and_goes_through_every_stage(own_model, tmp_path):
    from bneck import export, finetune, predict, train
    from bneck.pipeline.predictions_csv import read_predictions

    data = make_images(tmp_path / "data", 3)
    report = extract(data, tmp_path / "f", backbone=str(own_model), size=SIZE, verbose=False)
    got = read_features(tmp_path / "f" / "train.h5")
    model = keras.saving.load_model(own_model)
    np.testing.assert_allclose(got.features, model.predict(_pixels(data, got.paths), verbose=0), rtol=1e-5, atol=1e-6)
    assert report.spec.backbone == "keras-file" and report.spec.layer == "embedding"
    assert report.spec.weights == "mine.keras" and report.spec.preprocessing.startswith("none")

    train(tmp_path / "f", ["dense"], tmp_path / "m", epochs=1, verbose=False)
    finetune(str(tmp_path / "m" / "dense"), str(data), str(tmp_path / "ft"), epochs=1, verbose=False)
    made = json.loads((tmp_path / "ft" / "manifest.json").read_text())
    assert made["config"]["unfreeze_from"] == "top"  # the block after the last stage output (residual_1)
    assert made["frozen_layers"] > 0

    own_model.unlink()  # the fine-tuned folder holds the whole network: predict and export need no file
    rows = [r for r in read_predictions((tmp_path / "ft" / "predictions.csv").read_text()) if r["split"] == "test"]
    ours = np.array([[r["probabilities"][c] for c in ("cats", "dogs")] for r in rows])
    _, predicted = predict(str(tmp_path / "ft"), [str(data / r["path"]) for r in rows])
    np.testing.assert_allclose([[p["probabilities"][c] for c in ("cats", "dogs")] for p in predicted], ours, atol=1e-5)
    export(str(tmp_path / "ft"), str(tmp_path / "exported"), format="keras", verbose=False)
    served = keras.saving.load_model(tmp_path / "exported" / "model.keras", safe_mode=True)  # Keras alone
    pixels = _pixels(data, [r["path"] for r in rows]).astype(np.uint8)
    np.testing.assert_allclose(np.asarray(served(pixels, training=False)), ours, atol=1e-4)


def test_preprocess_applies_a_familys_preprocess_input_and_layer_takes_any_layer(own_model, tmp_path):
    data = make_images(tmp_path / "data", 2, splits=("train",))
    options = dict(backbone=str(own_model), size=SIZE, layer="residual_0", pool="avg", verbose=False)
    report = extract(data, tmp_path / "f", preprocess="resnet", **options)
    got = read_features(tmp_path / "f" / "train.h5")
    model = keras.saving.load_model(own_model)
    inner = keras.Model(model.input, keras.layers.GlobalAveragePooling2D()(model.get_layer("residual_0").output))
    caffe = keras.applications.resnet.preprocess_input(_pixels(data, got.paths))
    np.testing.assert_allclose(got.features, inner.predict(caffe, verbose=0), rtol=1e-5, atol=1e-6)
    assert "resnet.preprocess_input" in report.spec.preprocessing
    plain = extract(data, tmp_path / "g", **options)
    assert plain.spec.key != report.spec.key  # the preprocessing is part of the key


def test_a_model_file_is_keyed_by_its_content_not_its_name(own_model, tmp_path):
    data = make_images(tmp_path / "data", 2, splits=("train",))
    first = extract(data, tmp_path / "a", backbone=str(own_model), size=SIZE, verbose=False)
    moved = tmp_path / "elsewhere" / "renamed.keras"
    moved.parent.mkdir()
    shutil.copy(own_model, moved)
    again = extract(data, tmp_path / "b", backbone=str(moved), size=SIZE, verbose=False)
    assert again.spec.key == first.spec.key and again.forward_images == 0  # every row from the cache
    model = keras.saving.load_model(own_model)
    kernel = model.get_layer("stem").kernel
    kernel.assign(kernel.numpy() * 1.01)
    model.save(tmp_path / "elsewhere" / "edited.keras")
    edited = extract(
        data, tmp_path / "c", backbone=str(tmp_path / "elsewhere" / "edited.keras"), size=SIZE, verbose=False
    )
    assert edited.spec.key != first.spec.key and edited.forward_images == 4


def _registered_layer(x):
    @keras.saving.register_keras_serializable(package="users_own")
    class Twice(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2

    return Twice()(x)


def _own_activation(x):
    def swishish(t):
        return t * keras.ops.sigmoid(t)

    return keras.layers.Conv2D(3, 1, activation=swishish)(x)


CARRYING_CODE = {  # how a model file can carry code: what each adds after the rescaling
    "a Lambda layer": (lambda x: keras.layers.Lambda(lambda t: t * 2)(x), "'Lambda'"),
    "a custom layer class": (_registered_layer, "'Twice'"),
    "a Python function as activation": (_own_activation, "function"),
    "a Lambda inside a nested model": (
        lambda x: keras.Sequential([keras.Input((None, None, 3)), keras.layers.Lambda(lambda t: -t)])(x),
        "'Lambda'",
    ),
}


@pytest.mark.parametrize("case", sorted(CARRYING_CODE))
def test_a_model_file_carrying_code_is_refused_before_any_work(case, tmp_path, capsys):
    first, named = CARRYING_CODE[case]
    path = tmp_path / "evil.keras"
    _network(first).save(path)
    data = make_images(tmp_path / "data", 1, splits=("train",))
    with pytest.raises(UnsafeModel, match=named):
        extract(data, tmp_path / "api", backbone=str(path), size=SIZE, verbose=False)
    code = main(["extract", str(data), "--out", str(tmp_path / "out"), "--backbone", str(path), "--size", "64"])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "api").exists()
    assert not (tmp_path / "bneck-cache").exists()  # nothing was computed or cached


@pytest.mark.parametrize(
    "options,says",
    [
        (dict(weights="none"), "carries its own weights"),
        (dict(preprocess="resnt"), "'resnet'"),
        (dict(size=20_000), "from 32 to 1024"),
        (dict(layer="no_such_layer"), "a layer of mine.keras; its named cut points are residual_1, top"),
    ],
)
def test_options_that_do_not_fit_a_model_file_are_refused_before_any_work(own_model, tmp_path, options, says):
    data = make_images(tmp_path / "data", 1, splits=("train",))
    with pytest.raises(BneckError, match=says):
        extract(data, tmp_path / "out", backbone=str(own_model), verbose=False, **options)
    assert not (tmp_path / "bneck-cache" / "features").exists() or not any(
        (tmp_path / "bneck-cache" / "features").iterdir()
    )


def test_files_that_are_no_keras_model_are_refused_with_what_is_read(tmp_path):
    data = make_images(tmp_path / "data", 1, splits=("train",))
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    for path, says in (
        (tmp_path / "model.h5", "ending in .keras"),
        (tmp_path / "missing.keras", "no file exists"),
        (tmp_path / "junk.keras", "not a readable .keras archive"),
    ):
        with pytest.raises(BneckError, match=says):
            extract(data, tmp_path / "out", backbone=str(path), verbose=False)
    with pytest.raises(BneckError, match="^preprocess applies to a model file given as backbone=PATH"):
        extract(data, tmp_path / "out", backbone="mobilenet", preprocess="resnet", verbose=False)


def test_a_sequential_model_file_is_read_as_its_layers(tmp_path):
    keras.utils.set_random_seed(4)
    layers = [keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255.0)]
    for width in (8, 16, 16):
        layers.append(keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu"))
    model = keras.Sequential(layers + [keras.layers.GlobalAveragePooling2D(name="pooled")])
    model.save(tmp_path / "seq.keras")
    data = make_images(tmp_path / "data", 2, splits=("train",))
    report = extract(data, tmp_path / "f", backbone=str(tmp_path / "seq.keras"), verbose=False)
    got = read_features(tmp_path / "f" / "train.h5")
    assert report.spec.input_size == SIZE and report.spec.layer == "pooled"  # its fixed side is the default
    np.testing.assert_allclose(got.features, model.predict(_pixels(data, got.paths), verbose=0), rtol=1e-5, atol=1e-6)


def test_features_cut_below_the_default_unfreeze_point_fine_tune_from_a_point_below_the_cut(own_model, tmp_path):
    """--layer residual_0 cuts below the whole model's unfreeze point (top): the default is found in the
    cut model's graph instead, and a moved model file is found again with --weights."""
    from bneck import finetune, train

    data = make_images(tmp_path / "data", 3)
    extract(data, tmp_path / "f", backbone=str(own_model), size=SIZE, layer="residual_1", pool="avg", verbose=False)
    train(tmp_path / "f", ["gap-dense"], tmp_path / "m", epochs=1, verbose=False)
    moved = tmp_path / "moved.keras"
    own_model.rename(moved)
    with pytest.raises(BneckError, match=f"recorded at {own_model}, no longer there"):
        finetune(str(tmp_path / "m" / "gap-dense"), str(data), str(tmp_path / "ft"), epochs=1, verbose=False)
    finetune(
        str(tmp_path / "m" / "gap-dense"), str(data), str(tmp_path / "ft"), epochs=1, weights=str(moved), verbose=False
    )
    made = json.loads((tmp_path / "ft" / "manifest.json").read_text())
    assert made["config"]["unfreeze_from"] == "down_1" and made["frozen_layers"] > 0  # the block after residual_0
