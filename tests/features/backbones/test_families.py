"""Every keras.applications family works end to end: extraction equals plain Keras, one fine-tuning
epoch runs from an unfreeze point found in its graph, and the exported model gives the same answers.

Each family's smallest model runs by default; every other constructor runs with ``pytest --matrix``.
Weights are random, written to a ``.weights.h5`` file inside the test (no ImageNet file exists
here for most families): what this shows is shapes, preprocessing and equality, not accuracy.
"""

from __future__ import annotations

import collections
import json
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

from bneck.features import extract, read_features
from bneck.features.backbones.catalog import catalog
from tests.generated import keras_reference_features, make_images

pytestmark = pytest.mark.pure
SIZE = 80  # at least every family's smallest input (InceptionV3 and InceptionResNetV2: 75)


def _by_family() -> dict[str, list[str]]:
    families = collections.defaultdict(list)
    for name, record in sorted(catalog().items(), key=lambda item: item[1]["parameters"]):
        families[record["module"]].append(name)
    return families


SMALLEST = [names[0] for names in _by_family().values()]
OTHERS = [pytest.param(name, marks=pytest.mark.matrix) for names in _by_family().values() for name in names[1:]]


def _check_family(name: str, tmp_path) -> None:
    """Extraction equals plain Keras; then train a head, fine-tune one epoch from the graph's
    unfreeze point, export, and serve the export with Keras alone."""
    from bneck import export, finetune, train
    from bneck.features.backbones.registry import get_backbone
    from bneck.pipeline.predictions_csv import read_predictions

    data = make_images(tmp_path / "data", 3)
    weights = tmp_path / f"{name}.weights.h5"
    paths = sorted(str(p.relative_to(data)) for p in (data / "train").rglob("*.jpg"))
    want = keras_reference_features(name, SIZE, weights, data, paths)
    report = extract(data, tmp_path / "f", backbone=name, size=SIZE, weights=str(weights), pool="avg", verbose=False)
    got = read_features(tmp_path / "f" / "train.h5")
    assert list(got.paths) == paths and report.spec.layer == catalog()[name]["default_layer"]
    scale = float(np.max(np.abs(want))) or 1.0
    assert np.max(np.abs(got.features - want)) / scale < 1e-4, name

    train(tmp_path / "f", ["dense"], tmp_path / "m", epochs=1, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = finetune(str(tmp_path / "m" / "dense"), str(data), str(tmp_path / "ft"), epochs=1, verbose=False)
    entry = get_backbone(name)
    made = json.loads((tmp_path / "ft" / "manifest.json").read_text())
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    # a family whose top reads tensors from below its unfreeze point (NASNet) says so, and runs uncached
    assert all("cannot be cached" in text for text in said), said
    assert made["config"]["cache_frozen"] is not bool(said)
    assert made["config"]["unfreeze_from"] == entry.unfreeze_from
    assert (
        entry.unfreeze_from in catalog()[name]["unfreeze_points"]
        or entry.measured_unfreeze_from
        or entry.chosen_last_block
    )
    assert made["frozen_layers"] > 0  # only the top is trained
    assert len(tuned.history["loss"]) == 1 and np.isfinite(tuned.history["loss"][0])

    meta = export(str(tmp_path / "ft"), str(tmp_path / "exported"), format="keras", verbose=False)
    assert meta["check"]["max_abs_difference"] < 1e-4
    served = keras.saving.load_model(tmp_path / "exported" / "model.keras", safe_mode=True)  # Keras alone
    rows = [r for r in read_predictions((tmp_path / "ft" / "predictions.csv").read_text()) if r["split"] == "test"]
    pixels = [Image.open(data / r["path"]).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR) for r in rows]
    ours = np.array([[r["probabilities"][c] for c in ("cats", "dogs")] for r in rows])  # what fine-tuning wrote
    np.testing.assert_allclose(np.asarray(served(np.stack(pixels), training=False)), ours, atol=1e-4)


@pytest.mark.parametrize("name", SMALLEST)
def test_each_family_extracts_like_keras_fine_tunes_from_its_graph_and_exports(name, tmp_path):
    _check_family(name, tmp_path)


@pytest.mark.parametrize("name", OTHERS)
def test_every_other_constructor_too(name, tmp_path):
    _check_family(name, tmp_path)


def test_weights_in_either_form_users_have_give_the_same_features(tmp_path):
    """The legacy ``.h5`` layout Keras publishes its weights in, and ``save_weights``' ``.weights.h5``."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    model.save_weights(tmp_path / "new.weights.h5")
    with h5py.File(tmp_path / "legacy_no_top.h5", "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    data = make_images(tmp_path / "data", 2, splits=("train",))
    rows = {}
    for form in ("new.weights.h5", "legacy_no_top.h5"):
        options = dict(backbone="mobilenetv3small", size=SIZE, weights=str(tmp_path / form), pool="avg")
        report = extract(data, tmp_path / form.split(".")[0], verbose=False, **options)
        rows[form] = read_features(tmp_path / form.split(".")[0] / "train.h5").features
        assert report.spec.weights == form  # keyed by the file's name and sha256, not as 'imagenet'
    np.testing.assert_array_equal(rows["new.weights.h5"], rows["legacy_no_top.h5"])
    assert float(np.std(rows["new.weights.h5"])) > 0
