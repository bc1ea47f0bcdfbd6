"""The compiled training loop stages 2 and 3 share, on a synthetic problem (pure: no ../shared)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bneck.core.tfimport import import_tensorflow
from bneck.pipeline.training.fastfit import fast_fit

pytestmark = pytest.mark.pure


def _problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)  # linearly separable
    return x, y


def _model(classes=2, seed=0):
    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))


def test_it_learns_and_the_same_seed_gives_the_same_history():
    x, y = _problem()
    xv, yv = _problem(32, 1)
    runs = [
        fast_fit(_model(), x, y, xv, yv, epochs=15, batch_size=8, optimizer="adam", lr=0.05, seed=3) for _ in range(2)
    ]
    assert runs[0]["val_accuracy"][-1] >= 0.9 and runs[0]["loss"][-1] < runs[0]["loss"][0]
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"loss", "accuracy", "val_loss", "val_accuracy"} and len(runs[0]["loss"]) == 15


def test_keep_best_with_a_baseline_keeps_the_starting_weights_when_no_epoch_beats_it():
    x, y = _problem()
    model = _model()
    start = [w.copy() for w in model.get_weights()]
    history = fast_fit(
        model,
        x,
        y,
        x,
        y,
        epochs=2,
        batch_size=8,
        optimizer="sgd",
        lr=1e-9,
        seed=0,
        monitor="val_accuracy",
        keep_best=True,
        baseline=1.01,
    )  # unbeatable
    assert len(history["val_accuracy"]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(start, model.get_weights()))


def test_patience_stops_early_and_views_pick_one_version_per_example():
    x, y = _problem()
    seen = []
    history = fast_fit(
        _model(),
        np.concatenate([x, x]),
        y,
        x,
        y,
        epochs=50,
        batch_size=16,
        optimizer="sgd",
        lr=1e-9,
        seed=0,
        patience=2,
        views=2,
        on_epoch=seen.append,
    )
    assert len(history["loss"]) == len(seen) == 3  # no improvement after the first: stops after 2 more


def _weights_per_epoch(**options):
    x, y = _problem()
    model, seen = _model(), []
    start = [w.copy() for w in model.get_weights()]
    fast_fit(
        model,
        x,
        y,
        x,
        y,
        batch_size=len(y),
        optimizer="sgd",
        seed=0,
        on_epoch=lambda logs: seen.append([w.copy() for w in model.get_weights()]),
        **options,
    )
    return [start] + seen


def test_cosine_schedule_ends_at_zero_and_warmup_scales_the_first_steps():
    # one step per epoch: the cosine factor at the last of 4 steps is 0, so it changes nothing
    cosine = _weights_per_epoch(epochs=4, lr=0.5, schedule="cosine")
    assert all(np.array_equal(a, b) for a, b in zip(cosine[3], cosine[4]))
    assert not all(np.array_equal(a, b) for a, b in zip(cosine[2], cosine[3]))
    constant = _weights_per_epoch(epochs=4, lr=0.5)
    assert not all(np.array_equal(a, b) for a, b in zip(constant[3], constant[4]))
    # warm-up over half the steps: the first update is half the plain one (same weights, same gradient)
    warm = _weights_per_epoch(epochs=4, lr=0.5, warmup=0.5)
    for w0, plain, warmed in zip(constant[0], constant[1], warm[1]):
        np.testing.assert_allclose(warmed - w0, 0.5 * (plain - w0), rtol=1e-5, atol=1e-7)


def test_label_smoothing_changes_the_training_loss_only():
    x, y = _problem()
    model = _model(classes=2)
    probs = model.predict(x, verbose=0).astype(np.float64)
    history = fast_fit(
        model, x, y, x, y, epochs=1, batch_size=len(y), optimizer="sgd", lr=1e-12, seed=0, label_smoothing=0.2
    )
    onehot = np.eye(2)[y]
    smoothed = onehot * 0.8 + 0.2 / 2
    expected_train = float(np.mean(-(smoothed * np.log(probs)).sum(1)))
    expected_val = float(np.mean(-(onehot * np.log(probs)).sum(1)))
    assert history["loss"][0] == pytest.approx(expected_train, rel=1e-4)
    assert history["val_loss"][0] == pytest.approx(expected_val, rel=1e-4)


def test_an_unknown_schedule_is_refused():
    x, y = _problem()
    with pytest.raises(ValueError, match="schedule must be one of constant, cosine"):
        fast_fit(_model(), x, y, x, y, epochs=1, batch_size=8, optimizer="sgd", lr=0.1, seed=0, schedule="step")


@pytest.mark.parametrize("block_batches", [32, 3])  # one block an epoch; 9 blocks, each read while one trains
def test_rows_streamed_from_disk_give_the_same_history_as_rows_in_memory(tmp_path, monkeypatch, block_batches):
    from bneck.pipeline.finetuning.rowfile import RowFolder
    from bneck.pipeline.training import fastfit

    monkeypatch.setattr(fastfit, "BLOCK_BATCHES", block_batches)

    x, y = _problem(200)
    xv, yv = _problem(70, 1)
    x2 = np.concatenate([x, x + 0.1])  # two views, view-major
    options = dict(
        epochs=4, batch_size=8, optimizer="adam", lr=0.01, seed=5, views=2, eval_batch=32, schedule="cosine", warmup=0.1
    )
    in_memory = fast_fit(_model(), x2, y, xv, yv, **options)
    with RowFolder(str(tmp_path)) as folder:
        rows, val = folder.new("train", len(x2), (8,)), folder.new("validation", len(xv), (8,))
        rows.write(0, x2[:150])
        rows.write(150, x2[150:])
        val.write(0, xv)
        streamed = fast_fit(_model(), rows, y, val, yv, **options)
        path = folder.path
    for key in in_memory:
        np.testing.assert_allclose(streamed[key], in_memory[key], rtol=1e-5, atol=1e-6)
    assert not os.path.exists(path)  # the row files are removed with their folder


def test_an_array_read_a_block_at_a_time_gives_the_history_of_the_array_copied_whole(monkeypatch):
    """Stage 2's heads feed their arrays as ``ArrayRows`` (blocks, no whole copy in TensorFlow): the
    same epochs as the compiled in-memory path."""
    from bneck.pipeline.training import fastfit
    from bneck.pipeline.training.fastfit import ArrayRows

    monkeypatch.setattr(fastfit, "BLOCK_BATCHES", 4)
    x, y = _problem(300)
    xv, yv = _problem(90, 1)
    options = dict(epochs=3, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.9, seed=2, eval_batch=32)
    whole = fast_fit(_model(), x, y, xv, yv, **options)
    blocks = fast_fit(_model(), ArrayRows(x), y, ArrayRows(xv), yv, **options)
    for key in whole:
        np.testing.assert_allclose(blocks[key], whole[key], rtol=1e-5, atol=1e-6)


def test_head_probabilities_come_in_batches_equal_to_keras_predict():
    from bneck.pipeline.training.heads import proba

    model = _model(classes=3)
    x, _ = _problem(700)
    np.testing.assert_allclose(proba(model, x, batch_size=256), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert proba(model, x[:0]).shape == (0, 3)


def test_a_row_file_reads_back_what_was_written_in_any_order(tmp_path, monkeypatch):
    from bneck.pipeline.finetuning import rowfile
    from bneck.pipeline.finetuning.rowfile import RowFolder

    monkeypatch.setattr(rowfile, "READ_CHUNK", 100)  # a long read takes several preads (Linux: 2 GB each)
    data = np.random.default_rng(0).normal(size=(50, 3, 4)).astype(np.float32)
    with RowFolder(str(tmp_path)) as folder:
        rows = folder.new("x", 50, (3, 4))
        rows.write(0, data)
        picked = [7, 0, 49, 7, 13]
        np.testing.assert_array_equal(rows.take(picked), data[picked])
        np.testing.assert_array_equal(rows[10:20], data[10:20])
        assert len(rows) == 50 and os.stat(rows.path).st_mode & 0o077 == 0  # private to this user
        with pytest.raises(ValueError, match="do not fit"):
            rows.write(45, data[:10])
        with pytest.raises(IndexError, match="0..49"):
            rows.take([3, 50])


def test_a_row_file_cut_short_while_read_is_one_paragraph_and_odd_indices_are_refused(tmp_path):
    """Found by an attack: a row file truncated mid-epoch ended the fine-tune in a traceback; floats,
    booleans and 2-D indices were read as other rows."""
    from bneck.core.errors import FeatureFileError
    from bneck.pipeline.finetuning.rowfile import RowFolder

    data = np.arange(40 * 6, dtype=np.float32).reshape(40, 6)
    with RowFolder(str(tmp_path)) as folder:
        rows = folder.new("x", 40, (6,))
        rows.write(0, data)
        for odd in ([1.7, 2.2], np.array([True] + [False] * 9), ["1"], [[1, 2], [3, 4]], 3):
            with pytest.raises(IndexError, match="one sequence of integers"):
                rows.take(odd)
        with pytest.raises(IndexError, match="0..39"):
            rows.take(np.array([2**63], np.uint64))
        with pytest.raises(TypeError, match="by a slice"):
            rows[3]
        np.testing.assert_array_equal(rows.take(np.array([3, 1], np.uint8)), data[[3, 1]])
        os.truncate(rows.path, 10 * 6 * 4)
        np.testing.assert_array_equal(rows.take(list(range(10))), data[:10])  # rows before the cut
        for read in (lambda: rows.take(list(range(0, 40, 3))), lambda: rows[5:20]):
            with pytest.raises(FeatureFileError, match="temporary row file, ended while it was read"):
                read()


def test_an_empty_split_gives_nan_from_a_row_source_as_from_an_array():
    from bneck.pipeline.training.fastfit import ArrayRows

    x, y = _problem(40)
    options = dict(epochs=1, batch_size=8, optimizer="sgd", lr=0.1, seed=0)
    whole = fast_fit(_model(), x, y, x[:0], y[:0], **options)
    rows = fast_fit(_model(), ArrayRows(x), y, ArrayRows(x[:0]), y[:0], **options)
    assert np.isnan(whole["val_loss"][0]) and np.isnan(rows["val_loss"][0]) and np.isnan(rows["val_accuracy"][0])


@pytest.mark.parametrize("stored", ["float32", "bfloat16"])
def test_a_shuffled_take_of_many_runs_equals_indexing_in_memory(tmp_path, stored):
    """take() reads in file order, runs of consecutive rows at once, on several threads: whatever the
    order, the repeats and the runs asked for, it returns exactly rows[indices]."""
    from bneck.pipeline.finetuning.rowfile import RowFolder, from_bfloat16, to_bfloat16

    rng = np.random.default_rng(1)
    data = rng.normal(size=(3000, 5, 7)).astype(np.float32)
    expected = from_bfloat16(to_bfloat16(data)) if stored == "bfloat16" else data
    with RowFolder(str(tmp_path)) as folder:
        rows = folder.new("x", len(data), (5, 7), stored)
        rows.write(0, data)
        for picked in (
            rng.permutation(3000)[:1024],  # an epoch's block: hundreds of runs, read by the threads
            np.r_[np.arange(100, 400), rng.integers(0, 3000, 50), np.arange(2990, 3000)],  # long runs, repeats
            rng.integers(0, 3000, 5000),  # more rows than the file, repeats everywhere
            np.arange(0),
        ):
            got = rows.take(picked)
            assert got.shape == (len(picked), 5, 7) and got.dtype == np.float32
            np.testing.assert_array_equal(got, expected[picked])


@pytest.mark.parametrize("plant", ["link", "file"])
def test_a_link_or_file_planted_as_the_row_folder_is_refused_and_never_followed(tmp_path, plant):
    from bneck.core.errors import ConfigError
    from bneck.pipeline.finetuning.rowfile import RowFolder

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    parent = tmp_path / "cache" / "tmp"
    parent.parent.mkdir()
    if plant == "link":
        parent.symlink_to(elsewhere)
    else:
        parent.write_text("mine")
    with pytest.raises(ConfigError, match="must be a folder"):
        RowFolder(str(parent))
    assert list(elsewhere.iterdir()) == [] and (parent.is_symlink() or parent.read_text() == "mine")


def test_row_folders_of_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from bneck.pipeline.finetuning.rowfile import RowFolder

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()  # a process that has ended
    (tmp_path / f"bneck-rows-{gone}-abc").mkdir()
    (tmp_path / f"bneck-rows-{gone}-abc" / "train.f32").write_bytes(b"0" * 64)
    (tmp_path / f"bneck-rows-{os.getppid()}-def").mkdir()  # a live process's
    (tmp_path / "bneck-rows-notapid").mkdir()
    (tmp_path / "mine").mkdir()
    with RowFolder(str(tmp_path)) as folder:
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(
            [f"bneck-rows-{os.getppid()}-def", "bneck-rows-notapid", "mine", os.path.basename(folder.path)]
        )
