"""Stage 3's correctness rules on real images, real weights and real trained heads."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bneck.core.tfimport import import_tensorflow
from bneck.features import ConfigError, get_backbone
from bneck.pipeline.artifacts import ArtifactError, load_classifier, write_manifest
from bneck.pipeline.cli import main
from bneck.pipeline.finetuning.model import HeadError, build_finetune_model, unfreeze_index
from bneck.pipeline.finetuning.stage import finetune
from bneck.pipeline.manifests import parse_manifest
from bneck.pipeline.training.fastfit import fast_fit
from bneck.pipeline.training.heads import build_head
from bneck.pipeline.training.stage import train

NO_AUGMENT = {"rotation": 0, "shift": 0, "shear": 0, "zoom": 0, "flip": False}


@pytest.fixture(scope="module")
def head_dir(features_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("heads")
    train(features_dir, ["dense", "logreg"], models, verbose=False, epochs=10)
    return models


@pytest.mark.parametrize(
    "name,expected",
    [
        ("vgg16", ["block5_conv1", "block5_conv2", "block5_conv3"]),
        ("mobilenet", ["conv_dw_13", "conv_dw_13_bn", "conv_pw_13", "conv_pw_13_bn"]),  # the block
        ("resnet50", None),
        ("inceptionv3", None),
        ("xception", None),
        ("mobilenetv2", None),
        ("efficientnetb0", None),
        ("vgg19", ["block5_conv1", "block5_conv2", "block5_conv3", "block5_conv4"]),
    ],
)
def test_the_last_block_point_is_the_last_block(name, expected):
    entry = get_backbone(name)
    base = entry.build(None, max(entry.min_size, 75), entry.default_alpha)
    start = unfreeze_index(base, entry, "last-block")
    trainable = [layer.name for layer in base.layers[start:] if layer.weights]
    if expected is not None:
        assert trainable == expected
    else:  # a real block: a few layers with weights, a small share of the base
        assert 2 <= len(trainable) < len([layer for layer in base.layers if layer.weights]) / 4
    assert unfreeze_index(base, entry, "none") is None
    with pytest.raises(ConfigError, match="--unfreeze-from must be"):
        unfreeze_index(base, entry, "no_such_layer")
    # the default is the measured point where there is one, else the last block
    default = unfreeze_index(base, entry, None)
    assert default == unfreeze_index(base, entry, "default")
    assert (default < start) if name in ("mobilenet", "mobilenetv2") else (default == start)


@pytest.mark.parametrize(
    "name,point,stage",
    [("mobilenet", "conv_pad_6", "conv_dw_6"), ("mobilenetv2", "block_6_expand", "block_6_depthwise")],
)
def test_the_measured_default_starts_the_14x14_stage(name, point, stage):
    entry = get_backbone(name)
    base = entry.build(None, 224, entry.default_alpha)
    start = unfreeze_index(base, entry, None)
    assert base.layers[start].name == point
    # the first layer that halves 28x28 to 14x14 is inside the trained top, nothing trained before it
    assert tuple(base.get_layer(stage).output.shape[1:3]) == (14, 14)
    assert tuple(base.layers[start].input.shape[1:3]) == (28, 28)


def test_assembled_model_freezes_below_the_point_and_keeps_bn_in_inference(head_dir, image_root):
    head = load_classifier(str(head_dir / "dense"))
    ft = build_finetune_model(head, "last-block", NO_AUGMENT, seed=0)
    assert ft.unfreeze_from == "conv_dw_13"
    assert ft.trainable_layers == ["conv_dw_13", "conv_pw_13"]  # the block's BN layers stay frozen
    assert all(
        not layer.trainable
        for layer in ft.feature_model.layers[: ft.feature_model.layers.index(ft.feature_model.get_layer("conv_dw_13"))]
    )
    fm = ft.feature_model
    watched = {
        name: [np.array(w) for w in fm.get_layer(name).weights]
        for name in ("conv_pw_13_bn", "conv_pw_13", "conv_pw_12")
    }
    ft.model.compile(optimizer="sgd", loss="binary_crossentropy")
    x = np.random.default_rng(0).uniform(-1, 1, (8, 224, 224, 3)).astype("float32")
    ft.model.fit(x, np.ones(8, "float32"), epochs=1, batch_size=4, verbose=0)

    def changed(name):
        return any(not np.array_equal(a, np.array(b)) for a, b in zip(watched[name], fm.get_layer(name).weights))

    assert not changed("conv_pw_13_bn")  # BN statistics untouched: inference mode
    assert not changed("conv_pw_12")  # below the unfreeze point
    assert changed("conv_pw_13")  # the unfrozen block learns


def test_augmentation_only_in_training(head_dir):
    tf = import_tensorflow()
    head = load_classifier(str(head_dir / "dense"))
    ft = build_finetune_model(
        head, "none", {"rotation": 40, "shift": 0.2, "shear": 0.2, "zoom": 0.2, "flip": True}, seed=0
    )
    assert not [layer for layer in ft.model.layers if layer.name.startswith("aug_")]
    x = np.random.default_rng(1).uniform(-1, 1, (4, 224, 224, 3)).astype("float32")
    direct = head.model(ft.feature_model(x, training=False), training=False).numpy()
    np.testing.assert_allclose(ft.model(x, training=False).numpy(), direct, atol=1e-6)
    assert np.abs(np.asarray(ft.augmentation(x, training=True)) - x).mean() > 0.05
    assert ft.trainable_layers == []  # --unfreeze-from none: frozen base, head trains
    # the training loop hands the augmentation training batches only: count what it sees
    seen = tf.Variable(0)

    def counting(batch):
        seen.assign_add(tf.shape(batch)[0])
        return ft.augmentation(batch, training=True)

    history = fast_fit(
        ft.model,
        x,
        np.array([0, 1, 0, 1]),
        np.repeat(x, 3, axis=0),
        np.zeros(12, int),
        epochs=2,
        batch_size=2,
        optimizer="sgd",
        lr=1e-4,
        seed=0,
        augment=counting,
        eval_batch=4,
    )
    assert int(seen.numpy()) == 2 * 4 and len(history["val_loss"]) == 2  # 2 epochs x 4 training images


def _crafted_head(head_dir, folder, input_shape, **manifest_changes):
    """A genuinely hashed head folder: a fresh (untrained) head, the dense head's manifest."""
    folder.mkdir()
    build_head("dense", input_shape, 2, 256, 0.5).save(folder / "model.keras")
    manifest = json.loads((head_dir / "dense" / "manifest.json").read_text())
    body = {k: v for k, v in manifest.items() if k not in ("artifacts", "versions", "created_utc", "manifest_version")}
    write_manifest(str(folder), parse_manifest({**body, **manifest_changes}, "crafted"))
    return folder


def test_untrained_and_sklearn_heads_are_refused(head_dir, features_dir, tmp_path):
    with pytest.raises(HeadError, match="scikit-learn"):
        build_finetune_model(load_classifier(str(head_dir / "logreg")), None, NO_AUGMENT, 0)
    folder = _crafted_head(head_dir, tmp_path / "untrained", (7, 7, 256), trained=False, epochs_run=0)
    with pytest.raises(HeadError, match="never trained"):
        build_finetune_model(load_classifier(str(folder)), None, NO_AUGMENT, 0)
    ft = build_finetune_model(load_classifier(str(folder)), None, NO_AUGMENT, 0, allow_untrained_head=True)
    assert ft.trainable_layers


def test_head_that_does_not_fit_the_base_is_refused(head_dir, tmp_path):
    folder = _crafted_head(head_dir, tmp_path / "mismatch", (4, 4, 512), feature_shape=[4, 4, 512])
    with pytest.raises(HeadError, match=r"takes inputs of shape \(4, 4, 512\).*produces \(7, 7, 256\)"):
        build_finetune_model(load_classifier(str(folder)), None, NO_AUGMENT, 0)
    lying = _crafted_head(head_dir, tmp_path / "lying", (4, 4, 512))  # its manifest says (7, 7, 256)
    with pytest.raises(ArtifactError, match=r"takes inputs of shape \(4, 4, 512\), but its manifest says"):
        load_classifier(str(lying))


def test_short_real_finetune_keeps_or_improves_validation_loss_and_writes_artifacts(
    head_dir, image_root, tmp_path, capsys
):
    out = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                str(head_dir / "dense"),
                "--data",
                str(image_root),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert ("with the frozen head ->" in said or "no epoch beat the frozen head" in said) and "test accuracy" in said
    files = set(os.listdir(out))
    assert {
        "model.keras",
        "manifest.json",
        "metrics.json",
        "history.csv",
        "curves.png",
        "confusion_validation.png",
        "confusion_test.png",
    } <= files
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == files - {"manifest.json"}
    config = manifest["config"]  # the defaults: Adam 3e-4, warm-up, cosine, label smoothing, the measured point
    assert (config["optimizer"], config["lr"], config["schedule"], config["warmup"], config["label_smoothing"]) == (
        "adam",
        3e-4,
        "cosine",
        0.1,
        0.1,
    )
    assert config["unfreeze_from"] == "conv_pad_6"
    metrics = json.loads((out / "metrics.json").read_text())
    before = metrics["before_finetuning"]["validation"]["loss"]
    # the kept weights are never worse on validation than the frozen head
    assert metrics["validation"]["accuracy"] >= metrics["before_finetuning"]["validation"]["accuracy"] - 1e-6
    history = list(__import__("csv").DictReader(open(out / "history.csv")))
    assert min(float(r["val_loss"]) for r in history) <= before + 0.02
    assert metrics["validation"]["accuracy"] >= 0.7
    reloaded = load_classifier(str(out))  # hashes checked, safe_mode load
    assert reloaded.model.name == "bneck_finetuned"
    assert not [layer for layer in reloaded.model.layers if layer.name.startswith("aug_")]
    # predict on the test images reproduces the recorded test accuracy
    from bneck.features.images.dataset import discover
    from bneck.pipeline.predict import predict_images

    test = discover(image_root).splits["test"]
    rows = predict_images(str(out), [r.abspath for r in test])
    names = reloaded.class_names
    acc = np.mean([names.index(row["class"]) == r.label for row, r in zip(rows, test)])
    assert acc == pytest.approx(metrics["test"]["accuracy"], abs=0.02)
    # its domain was calibrated on the validation images through the fine-tuned base: few test images look foreign
    assert (out / "domain.json").is_file() and all(isinstance(row["out_of_domain"], bool) for row in rows)
    assert np.mean([row["out_of_domain"] for row in rows]) <= 0.2
    # exported (raw uint8 images in, probabilities out, the whole graph), it reproduces predict (which runs base
    # and head apart, to score the domain on the base's output)
    import keras
    from PIL import Image

    assert main(["export", str(out), "--out", str(tmp_path / "deploy"), "--quiet"]) == 0
    exported = keras.saving.load_model(str(tmp_path / "deploy" / "model.keras"))
    images = np.stack(
        [np.asarray(Image.open(r.abspath).convert("RGB").resize((224, 224), Image.BILINEAR)) for r in test[:6]]
    )
    expected = np.array([list(row["probabilities"].values()) for row in rows[:6]])
    assert np.abs(np.asarray(exported(images)) - expected).max() <= 1e-4


def test_a_run_that_goes_wrong_keeps_the_starting_weights(head_dir, image_root, tmp_path, capsys):
    # lr 1.0 wrecks the unfrozen block at once: no epoch may replace the frozen head
    assert (
        main(
            [
                "finetune",
                str(head_dir / "dense"),
                "--data",
                str(image_root),
                "--out",
                str(tmp_path / "ft"),
                "--epochs",
                "1",
                "--lr",
                "1.0",
                "--no-augment",
                "--quiet",
            ]
        )
        == 0
    )
    assert "no epoch beat the frozen head" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["kept_epoch"] == 0
    assert metrics["validation"]["accuracy"] == pytest.approx(
        metrics["before_finetuning"]["validation"]["accuracy"], abs=1e-6
    )


def test_finetune_user_errors(head_dir, image_root, tmp_path, capsys):
    assert main(["finetune", str(head_dir / "logreg"), "--data", str(image_root), "--out", str(tmp_path / "x")]) == 2
    assert "scikit-learn" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                str(head_dir / "dense"),
                "--data",
                str(image_root),
                "--out",
                str(tmp_path / "x"),
                "--unfreeze-from",
                "block9",
            ]
        )
        == 2
    )
    assert "--unfreeze-from must be" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown augmentation"):
        finetune(str(head_dir / "dense"), str(image_root), str(tmp_path / "y"), augment={"blur": 1})


def test_finetune_uses_the_recorded_split_of_single_root_data(tmp_path):
    """Extracted with a non-default --split, --seed and --exclude, the fine-tune sees exactly the images
    the head's features came from: no training image in its validation or test, and the frozen head's
    validation accuracy before fine-tuning equals stage 2's."""
    import hashlib
    import shutil

    from bneck.core.errors import DatasetError
    from bneck.features import extract, read_features
    from bneck.pipeline import finetune, train
    from bneck.pipeline.predictions_csv import read_predictions
    from tests.conftest import DATA, MOBILENET

    root = tmp_path / "flat"
    for cls, src in (("cats", "cats"), ("dogs", "dogs"), ("extra", "cats")):
        (root / cls).mkdir(parents=True)
        for name in sorted(os.listdir(DATA / "train" / src))[(0 if cls != "extra" else 40) :][:12]:
            shutil.copy(DATA / "train" / src / name, root / cls / name)
    extract(root, tmp_path / "f", split="0.5,0.25,0.25", seed=3, exclude=["extra"], verbose=False, **MOBILENET)
    board = train(tmp_path / "f", ["dense"], tmp_path / "m", epochs=3, verbose=False)
    result = finetune(str(tmp_path / "m" / "dense"), None, str(tmp_path / "ft"), epochs=1, views=2, verbose=False)
    train_shas = set(read_features(str(tmp_path / "f" / "train.h5")).sha256)
    rows = [r for r in read_predictions((tmp_path / "ft" / "predictions.csv").read_text()) if r["split"] != "train"]
    held_out = {hashlib.sha256((root / r["path"]).read_bytes()).hexdigest() for r in rows}
    assert {r["split"] for r in rows} == {"validation", "test"} and len(rows) == 12
    assert not held_out & train_shas and not any(r["path"].startswith("extra/") for r in rows)
    assert result.metrics["before_finetuning"]["validation"]["accuracy"] == board.best.accuracy("validation")
    # the data folder no longer holding those bytes: refused, naming what differs
    victim = next(p for p in (root / "cats").iterdir())
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="does not hold the images the model was made from: 1 of"):
        finetune(str(tmp_path / "m" / "dense"), str(root), str(tmp_path / "ft2"), epochs=1, verbose=False)
