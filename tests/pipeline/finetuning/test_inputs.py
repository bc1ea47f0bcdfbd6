"""Stage 3's fast path: the frozen part cached per image and view, only the top trained."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bneck.core.errors import BneckWarning
from bneck.core.tfimport import import_tensorflow
from bneck.features import ConfigError, extract, get_backbone
from bneck.features.backbones.feature_model import build_base, cut_model
from bneck.features.cache.maintenance import list_entries
from bneck.features.featurefile.storage import round_to_bfloat16
from bneck.features.images.dataset import discover
from bneck.features.images.decode import decode_image
from bneck.features.views.rows import TrunkViews, view_spec
from bneck.pipeline.artifacts import load_classifier
from bneck.pipeline.cli import main
from bneck.pipeline.finetuning.model import FinetuneModel, build_finetune_model, frozen_split
from bneck.pipeline.finetuning.stage import finetune
from bneck.pipeline.training.heads import build_head
from bneck.pipeline.training.stage import train
from tests.features.featurefile.test_rounding import nearest_with_significant_bits
from tests.generated import TINY_SIZE, make_images

NO_AUGMENT = {"rotation": 0, "shift": 0, "shear": 0, "zoom": 0, "flip": False}
AUGMENT = {"rotation": 20, "shift": 0.1, "shear": 0.1, "zoom": 0.1, "flip": True}


@pytest.fixture(scope="module")
def tiny_image_root(tmp_path_factory):
    """Cats vs dogs, 40 generated images per class in train/validation/test."""
    return make_images(tmp_path_factory.mktemp("tiny_finetune") / "data", 40)


@pytest.fixture(scope="module")
def tiny_head_dir(tiny_image_root, tiny, tmp_path_factory):
    """A dense head trained on the tiny backbone's features of ``tiny_image_root``."""
    root = tiny_image_root.parent
    extract(tiny_image_root, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    models = tmp_path_factory.mktemp("tiny_heads_cf")
    train(root / "features", ["dense"], models, verbose=False, epochs=10)
    return models / "dense"


@pytest.fixture(scope="module")
def head_dir(features_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("heads_cf")
    train(features_dir, ["dense"], models, verbose=False, epochs=10)
    return models / "dense"


@pytest.mark.pure
def test_fast_and_plain_paths_give_the_same_first_epoch_loss(tiny_head_dir, tiny_image_root, tmp_path):
    kwargs = dict(epochs=1, lr=1e-3, augment=NO_AUGMENT, seed=3, verbose=False)
    plain = finetune(str(tiny_head_dir), str(tiny_image_root), str(tmp_path / "plain"), **kwargs)
    fast = finetune(
        str(tiny_head_dir),
        str(tiny_image_root),
        str(tmp_path / "fast"),
        cache_frozen=True,
        cache_dir=str(tmp_path / "cache"),
        **kwargs,
    )
    assert abs(plain.history["loss"][0] - fast.history["loss"][0]) < 1e-4
    assert abs(plain.history["val_loss"][0] - fast.history["val_loss"][0]) < 1e-4
    assert fast.metrics["cache_frozen"]["views"] == 1  # no augmentation: one view is all there is
    assert fast.metrics["cache_frozen"]["layer"] == "conv_pw_5_relu"  # just below the default, conv_pad_6
    # the saved fine-tuned models agree on test images
    for split in ("validation", "test"):
        assert plain.metrics[split]["accuracy"] == pytest.approx(fast.metrics[split]["accuracy"], abs=1e-6)
    manifest = json.loads((tmp_path / "fast" / "manifest.json").read_text())
    assert manifest["config"]["cache_frozen"] is True
    assert load_classifier(str(tmp_path / "fast")).model.name == "bneck_finetuned"


@pytest.mark.pure
def test_views_are_cached_by_content_and_view_zero_is_stage_one(tiny_head_dir, tiny_image_root, tmp_path, capsys, tiny):
    cache = tmp_path / "cache"
    args = [
        "finetune",
        str(tiny_head_dir),
        "--data",
        str(tiny_image_root),
        "--cache-frozen",
        "--views",
        "3",
        "--rotation",
        "20",
        "--epochs",
        "2",
        "--cache-dir",
        str(cache),
        "--quiet",
    ]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())["cache_frozen"]
    n = {s: len(r) for s, r in discover(str(tiny_image_root)).splits.items()}
    # 3 views of each training image, only view 0 of validation and test
    assert first["rows_computed"] == 3 * n["train"] + n["validation"] + n["test"]
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "metrics.json").read_text())["cache_frozen"]
    assert again["rows_computed"] == 0 and again["rows_reused"] == first["rows_computed"]
    # one cache entry per view; only augmented views carry an augmentation in their key
    entries = {
        e.meta["augmentation"] and json.loads(e.meta["augmentation"])["view"]: e for e in list_entries(str(cache))
    }
    assert sorted(k or 0 for k in entries) == [0, 1, 2]
    assert entries[None].rows == n["train"] + n["validation"] + n["test"]
    capsys.readouterr()
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0  # says which entry holds what
    said = capsys.readouterr().out
    holds = {e.key[:12]: line for e in entries.values() for line in said.splitlines() if line.startswith(e.key[:12])}
    assert "features + image view (fine-tuning)" in holds[entries[None].key[:12]]
    assert all(f"augmented view {v}" in holds[entries[v].key[:12]] for v in (1, 2))
    # the sizes add up: every entry here is a fine-tuning view (view 0 serves stage 1 too)
    total = f"{sum(e.bytes for e in entries.values()) / 1e6:.2f} MB"
    assert f"in all: {total} in 3 entries (fine-tuning views: {total})" in said
    # view 0 is exactly what `bneck extract --layer conv_pw_5_relu --pool none` keys and stores
    report = extract(
        tiny_image_root, tmp_path / "trunk_features", cache_dir=cache, verbose=False, layer="conv_pw_5_relu", **tiny
    )
    assert report.forward_images == 0 and report.spec.key == entries[None].key
    # a different augmentation is a different key: nothing reused for views 1 and 2
    assert main(args[:-1] + ["--rotation", "10", "--quiet", "--out", str(tmp_path / "c")]) == 0
    other = json.loads((tmp_path / "c" / "metrics.json").read_text())["cache_frozen"]
    assert other["rows_computed"] == 2 * n["train"]
    capsys.readouterr()


def _trunk_and_images(head_dir, image_root, n: int) -> tuple:
    """(the fine-tune model of the head, its frozen split, ``n`` decoded validation images, made-up
    hashes for them, MobileNet's preprocessing)."""
    ft = build_finetune_model(load_classifier(str(head_dir)), None, NO_AUGMENT, seed=0)
    records = discover(str(image_root)).splits["validation"][:n]
    images = np.stack([decode_image(r.abspath, 224) for r in records])
    shas = [f"{i:064x}" for i in range(len(images))]
    return ft, frozen_split(ft), images, shas, get_backbone("mobilenet").preprocess_fn()


def test_trunk_rows_equal_the_base_run_directly_and_views_augment_only_training(head_dir, image_root, tmp_path):
    tf = import_tensorflow()
    ft, split, images, shas, preprocess = _trunk_and_images(head_dir, image_root, 12)
    views = TrunkViews(
        split.trunk, preprocess, ft.spec, split.layer, split.pool, AUGMENT, 0, str(tmp_path / "cache"), verbose=False
    )
    rows = views.rows(images, shas, [0, 1])
    base = build_base(get_backbone("mobilenet"), ft.spec)
    direct = cut_model(base, get_backbone("mobilenet"), split.layer, "none").predict(
        preprocess(tf.constant(images, tf.float32)), verbose=0
    )
    np.testing.assert_allclose(rows[:12], direct, rtol=1e-4, atol=1e-4)  # view 0: the image itself
    assert np.abs(rows[12:] - direct).mean() > 0.1 * np.abs(direct).mean()  # view 1: augmented
    # the top on cached rows equals the whole fine-tune model on the images
    whole = ft.model.predict(preprocess(tf.constant(images, tf.float32)), verbose=0)
    np.testing.assert_allclose(split.top.predict(rows[:12], verbose=0), whole, atol=1e-5)
    assert view_spec(ft.spec, split.layer, "none", AUGMENT, 0, 0).augmentation is None
    assert '"view": 1' in view_spec(ft.spec, split.layer, "none", AUGMENT, 0, 1).augmentation


def test_views_at_float32_are_exact_and_rounded_views_their_rounding_at_a_third_of_the_disk(
    head_dir, image_root, tmp_path
):
    """The view precisions compute the same rows: float32 stores them as computed (view 0 under stage 1's
    key, equal to the base run directly); bfloat16 and e8m5 store each rounded to nearest, 8 and 6
    significant bits, a row's error at most 2**-8 and 2**-6 of its value; e8m5 entries take at most a
    third of the float32 entries' bytes on disk (issue 26: real MobileNet rows, real images)."""
    tf = import_tensorflow()
    ft, split, images, shas, preprocess = _trunk_and_images(head_dir, image_root, 8)
    rows, caches = {}, {}
    for precision in ("float32", "bfloat16", "e8m5"):
        caches[precision] = tmp_path / precision
        where = (ft.spec, split.layer, split.pool, AUGMENT, 0, str(caches[precision]))
        views = TrunkViews(split.trunk, preprocess, *where, verbose=False, precision=precision)
        rows[precision] = views.rows(images, shas, [0, 1])
    direct = cut_model(build_base(get_backbone("mobilenet"), ft.spec), get_backbone("mobilenet"), split.layer, "none")
    np.testing.assert_allclose(
        rows["float32"][:8],
        direct.predict(preprocess(tf.constant(images, tf.float32)), verbose=0),
        rtol=1e-4,
        atol=1e-4,
    )
    exact = rows["float32"]
    normal = np.abs(exact) >= np.finfo(np.float32).tiny
    assert normal.mean() > 0.5  # the rows are not mostly zeros: the comparison means something
    for precision, significant in (("bfloat16", 8), ("e8m5", 6)):
        rounded = rows[precision]
        np.testing.assert_array_equal(rounded[normal], nearest_with_significant_bits(exact[normal], significant))
        assert np.all(np.abs(rounded - exact) <= np.abs(exact) * 2.0**-significant)
        assert not np.array_equal(rounded, exact)
    np.testing.assert_array_equal(rows["bfloat16"], round_to_bfloat16(rows["float32"]))
    f32 = view_spec(ft.spec, split.layer, "none", AUGMENT, 0, 0)  # the default: float32
    assert f32.dtype == "float32" and f32.augmentation is None  # stage 1's key at that layer
    keys = {view_spec(ft.spec, split.layer, "none", AUGMENT, 0, 0, p).key for p in ("float32", "bfloat16", "e8m5")}
    assert len(keys) == 3
    disk = {p: sum(e.bytes for e in list_entries(str(c))) for p, c in caches.items()}
    assert disk["e8m5"] <= disk["float32"] / 3 and disk["e8m5"] < disk["bfloat16"], disk


@pytest.mark.pure
def test_frozen_base_mode_caches_stage_one_features(tiny_head_dir, tiny_image_root, tmp_path):
    result = finetune(
        str(tiny_head_dir),
        str(tiny_image_root),
        str(tmp_path / "ft"),
        unfreeze_from="none",
        epochs=2,
        augment=AUGMENT,
        views=2,
        cache_frozen=True,
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    assert result.metrics["cache_frozen"]["layer"] == "conv_pw_13_relu"
    manifest = json.loads((tmp_path / "ft" / "manifest.json").read_text())
    assert manifest["trainable_layers"] == [] and manifest["config"]["views"] == 2
    assert os.path.exists(tmp_path / "ft" / "model.keras")


@pytest.mark.pure
def test_a_cut_inside_a_residual_block_is_refused():
    import keras

    entry = get_backbone("resnet50")
    base = entry.build(None, 64, None)
    head = build_head("dense", tuple(base.output.shape[1:]), 2, 8, 0.0)
    for layer in base.layers:
        layer.trainable = False
    ft = FinetuneModel(None, base, None, "conv5_block3_2_conv", [], [], head)
    with pytest.raises(ConfigError, match="--cache-frozen needs the layers from --unfreeze-from conv5_block3_2_conv"):
        frozen_split(ft)
    ft.unfreeze_from = "conv5_block3_1_conv"  # the block's start: one tensor in, fine
    split = frozen_split(ft)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(split.top(split.trunk(x)), head(base([x])), atol=1e-5)
    assert split.layer == "conv5_block2_out" and isinstance(split.top, keras.Model)


@pytest.mark.pure
def test_views_must_be_positive(tiny_head_dir, tiny_image_root, tmp_path, capsys):
    assert (
        main(
            [
                "finetune",
                str(tiny_head_dir),
                "--data",
                str(tiny_image_root),
                "--out",
                str(tmp_path / "x"),
                "--cache-frozen",
                "--views",
                "0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--views must be an integer >= 1" in err and "views=0" in err
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.pure
def test_a_view_precision_without_cached_views_is_refused_before_any_work(
    tiny_head_dir, tiny_image_root, tmp_path, capsys
):
    args = ["finetune", str(tiny_head_dir), "--data", str(tiny_image_root), "--out", str(tmp_path / "x")]
    assert main(args + ["--no-cache-frozen", "--view-precision", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "--view-precision says how --cache-frozen stores" in err and "view_precision='bfloat16'" in err
    assert not os.path.exists(tmp_path / "x")
    assert main(args + ["--view-precision", "half"]) == 2  # a value outside the choices, with a suggestion
    assert "--view-precision must be one of 'float32', 'bfloat16', 'e8m5'" in capsys.readouterr().err


def _mirror_mean(folder, image_root, split):
    """The TTA probabilities of a saved fine-tuned model, computed independently: the model on each
    decoded image and on its numpy mirror image, averaged."""
    rows, plain, mirrored = _on_images(folder, image_root, split)
    return rows, (plain + mirrored) / 2


def _on_images(folder, image_root, split):
    """(the folder's predictions.csv rows of ``split``, the saved model's probabilities on each decoded
    image, on its numpy mirror image)."""
    from bneck.pipeline.artifacts import read_verified
    from bneck.pipeline.predictions_csv import read_predictions

    tf = import_tensorflow()
    model = load_classifier(str(folder)).model
    preprocess = get_backbone("mobilenet").preprocess_fn()
    rows = [
        r for r in read_predictions(read_verified(str(folder)).files["predictions.csv"].decode()) if r["split"] == split
    ]
    images = np.stack([decode_image(os.path.join(image_root, r["path"]), TINY_SIZE) for r in rows])

    def probs(x):
        out = model(preprocess(tf.constant(x, tf.float32)), training=False).numpy()
        return np.concatenate([1 - out, out], 1) if out.shape[1] == 1 else out

    return rows, probs(images), probs(np.ascontiguousarray(images[:, :, ::-1]))


@pytest.mark.pure
@pytest.mark.parametrize(
    "cache_frozen,precision", [(True, "float32"), (True, "bfloat16"), (True, "e8m5"), (False, "float32")]
)
def test_tta_scores_the_mean_over_each_image_and_its_mirror(
    tiny_head_dir, tiny_image_root, tmp_path, cache_frozen, precision
):
    """With bfloat16 views too: validation and test are scored by the saved model on the images."""
    from bneck.pipeline.artifacts import read_verified
    from bneck.pipeline.predictions_csv import read_predictions

    out = tmp_path / "tta"
    done = finetune(
        str(tiny_head_dir),
        str(tiny_image_root),
        str(out),
        epochs=1,
        lr=1e-3,
        augment=NO_AUGMENT,
        seed=3,
        verbose=False,
        tta=True,
        cache_frozen=cache_frozen,
        view_precision=precision,
        cache_dir=str(tmp_path / "cache"),
    )
    assert set(done.metrics["tta"]) == {"validation", "test"}
    saved = read_predictions(read_verified(str(out)).files["predictions_tta.csv"].decode())
    for split in ("validation", "test"):
        rows, expected = _mirror_mean(out, tiny_image_root, split)
        got = np.array([[r["probabilities"][c] for c in ("cats", "dogs")] for r in saved if r["split"] == split])
        assert [r["path"] for r in saved if r["split"] == split] == [r["path"] for r in rows]
        np.testing.assert_allclose(got, expected, atol=2e-4)
        right = np.mean([["cats", "dogs"][int(np.argmax(p))] == r["true"] for p, r in zip(expected, rows)])
        assert done.metrics["tta"][split]["accuracy"] == pytest.approx(right)
    if cache_frozen:  # the mirror view is cached like any view, independent of the seed
        mirrored = [
            e for e in list_entries(str(tmp_path / "cache")) if "horizontal-flip" in str(e.meta.get("augmentation"))
        ]
        assert len(mirrored) == 1


@pytest.mark.pure
def test_without_tta_there_is_no_tta_score(tiny_head_dir, tiny_image_root, tmp_path):
    done = finetune(
        str(tiny_head_dir),
        str(tiny_image_root),
        str(tmp_path / "plain"),
        epochs=1,
        augment=NO_AUGMENT,
        verbose=False,
        cache_dir=str(tmp_path / "cache"),
    )
    assert "tta" not in done.metrics and not (tmp_path / "plain" / "predictions_tta.csv").exists()


@pytest.mark.pure
def test_the_cached_path_decodes_each_image_once_and_none_whose_rows_are_cached(
    tiny_head_dir, tiny_image_root, tmp_path, monkeypatch
):
    import bneck.pipeline.finetuning.inputs as inputs

    decoded, real = [], inputs.decoded_batches

    def counting(items, *args, **kwargs):
        decoded.extend(key for key, _ in items)
        return real(items, *args, **kwargs)

    monkeypatch.setattr(inputs, "decoded_batches", counting)
    kwargs = dict(epochs=1, augment=AUGMENT, views=3, tta=True, cache_dir=str(tmp_path / "cache"), verbose=False)
    first = finetune(str(tiny_head_dir), str(tiny_image_root), str(tmp_path / "a"), **kwargs)
    n = {s: len(r) for s, r in discover(str(tiny_image_root)).splits.items()}
    # 3 views of each training image and 2 (itself, its mirror) of the others, each image decoded once
    assert first.metrics["cache_frozen"]["rows_computed"] == 3 * n["train"] + 2 * (n["validation"] + n["test"])
    assert len(decoded) == len(set(decoded)) == sum(n.values())
    decoded.clear()
    again = finetune(str(tiny_head_dir), str(tiny_image_root), str(tmp_path / "b"), **kwargs)
    assert again.metrics["cache_frozen"]["rows_computed"] == 0 and decoded == []  # no image decoded at all
    assert again.metrics["validation"] == first.metrics["validation"]


@pytest.mark.pure
def test_bfloat16_views_score_validation_and_test_on_the_images(tiny_head_dir, tiny_image_root, tmp_path, monkeypatch):
    """Rows rounded to bfloat16 train the top; what the folder records for validation and test is the
    saved model on the images (decoded once more at the end), so a rerun decodes those splits only."""
    import bneck.pipeline.finetuning.inputs as inputs

    decoded, real = [], inputs.decoded_batches

    def counting(items, *args, **kwargs):
        decoded.extend(key for key, _ in items)
        return real(items, *args, **kwargs)

    monkeypatch.setattr(inputs, "decoded_batches", counting)
    kwargs = dict(epochs=1, augment=AUGMENT, views=2, view_precision="bfloat16", verbose=False)
    kwargs["cache_dir"] = str(tmp_path / "cache")
    first = finetune(str(tiny_head_dir), str(tiny_image_root), str(tmp_path / "a"), **kwargs)
    n = {s: len(r) for s, r in discover(str(tiny_image_root)).splits.items()}
    scored = n["validation"] + n["test"]
    assert len(set(decoded)) == sum(n.values()) and len(decoded) == sum(n.values()) + scored
    decoded.clear()
    again = finetune(str(tiny_head_dir), str(tiny_image_root), str(tmp_path / "b"), **kwargs)
    assert again.metrics["cache_frozen"]["rows_computed"] == 0 and len(decoded) == len(set(decoded)) == scored
    assert again.metrics["test"] == first.metrics["test"]
    rows, plain, _ = _on_images(tmp_path / "b", tiny_image_root, "test")  # the saved model on each image
    saved = [[r["probabilities"][c] for c in ("cats", "dogs")] for r in rows]
    assert len(rows) == n["test"]
    np.testing.assert_allclose(saved, plain, atol=2e-4)


@pytest.mark.pure
def test_scoring_reads_rows_from_disk_one_batch_at_a_time(tmp_path):
    """Scoring a split never reads its row file whole (a 20,000-image split is gigabytes)."""
    import keras

    from bneck.pipeline.finetuning.inputs import TrainInputs, predictor
    from bneck.pipeline.finetuning.rowfile import RowFolder

    tf = import_tensorflow()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    rows = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    reads = []
    with RowFolder(str(tmp_path)) as folder:
        source = folder.new("validation", 10, (3,))
        source.write(0, rows)

        class Watched:  # the row file, with the size of every read noted
            def __len__(self):
                return len(source)

            def __getitem__(self, item):
                reads.append(item.stop - item.start)
                return source[item]

        predict = predictor(tf, TrainInputs(model, {}, lambda b: tf.cast(b, tf.float32), 1, eval_batch=4))
        got = predict(Watched(), 9)
    np.testing.assert_allclose(got, model.predict(rows[:9], verbose=0), atol=1e-6)
    assert reads == [4, 4, 1]


@pytest.mark.pure
def test_one_view_means_no_augmentation_and_the_record_says_so(tiny_head_dir, tiny_image_root, tmp_path):
    with pytest.warns(BneckWarning, match="--views 1 keeps only each image itself") as caught:
        done = finetune(
            str(tiny_head_dir),
            str(tiny_image_root),
            str(tmp_path / "one"),
            epochs=1,
            views=1,
            augment=AUGMENT,
            cache_dir=str(tmp_path / "cache"),
        )
    assert [w.filename for w in caught if "--views 1" in str(w.message)] == [__file__]  # said at the caller's line
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["config"]["augment"] == NO_AUGMENT and manifest["config"]["views"] == 1
    assert done.metrics["cache_frozen"]["views"] == 1


@pytest.mark.pure
def test_bfloat16_views_take_half_the_row_file_and_read_back_exactly(tmp_path):
    """Issue 28: 100,000 images with --cache-frozen --views 2 wrote a 34 GB float32 row file; views cached
    at bfloat16 are bfloat16 numbers, so the row file keeps their 16 bits and reads back the same floats."""
    from bneck.pipeline.finetuning.rowfile import RowFolder, from_bfloat16, to_bfloat16

    rng = np.random.default_rng(0)
    values = rng.normal(scale=5.0, size=(50, 4, 3)).astype(np.float32)
    values[0, 0, 0], values[1, 0, 0], values[2, 0, 0] = 0.0, -0.0, 3.0e38  # zero, negative zero, near the top
    as_bf16 = from_bfloat16(to_bfloat16(values))  # what the cache holds for bfloat16 views
    # an independent rounding: nearest bfloat16 (of the two neighbours, the closer; ties to even bits)
    bits = values.view(np.uint32)
    down, up = (bits & 0xFFFF0000).view(np.float32), ((bits & 0xFFFF0000) + 0x10000).view(np.float32)
    tie_even = ((bits >> 16) & 1) == 0
    nearer_down = np.abs(values - down) < np.abs(up - values)
    tie = np.abs(values - down) == np.abs(up - values)
    np.testing.assert_array_equal(as_bf16, np.where(nearer_down | (tie & tie_even), down, up))
    with RowFolder(str(tmp_path)) as folder:
        half, full = folder.new("half", 50, (4, 3), "bfloat16"), folder.new("full", 50, (4, 3))
        for rows in (half, full):
            rows.write(0, as_bf16[:20])
            rows.write(20, as_bf16[20:])
        assert os.path.getsize(half.path) * 2 == os.path.getsize(full.path) == 50 * 12 * 4
        np.testing.assert_array_equal(half[0:50], as_bf16)
        np.testing.assert_array_equal(half.take([49, 3, 3, 0]), as_bf16[[49, 3, 3, 0]])
        np.testing.assert_array_equal(half[0:50], full[0:50])
        # e8m5 views are exact in bfloat16 too (6 significant bits, bfloat16's exponent)
        from bneck.features.featurefile.storage import round_mantissa

        as_e8m5 = round_mantissa(values, 5)
        e8m5 = folder.new("e8m5", 50, (4, 3), "e8m5")
        e8m5.write(0, as_e8m5)
        assert os.path.getsize(e8m5.path) == os.path.getsize(half.path)
        np.testing.assert_array_equal(e8m5.take(list(range(49, -1, -1))), as_e8m5[::-1])
