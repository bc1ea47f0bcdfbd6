"""Stage 3 decides its own reuse: the same head, data and options fine-tune nothing, from the API and
the command line; another option, another head or a damaged folder fine-tunes again and says why."""

from __future__ import annotations

import re

import pytest

import bneck.pipeline.finetuning.stage as stage
from bneck.pipeline.cli import main
from bneck.pipeline.finetuning.stage import finetune
from bneck.pipeline.training.stage import train

QUICK = dict(epochs=1, views=1, rotation=0, shift=0, shear=0, zoom=0, flip=False)


@pytest.fixture(scope="module")
def heads(features_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("heads_reuse")
    train(features_dir, ["dense", "gap-dense"], models, verbose=False, epochs=5)
    return models


@pytest.fixture
def runs(monkeypatch):
    """Count the real fine-tunings (the spy calls the real one)."""
    calls = []
    real = stage._finetune

    def spy(head_dir, *args, **kwargs):
        calls.append(str(head_dir))
        return real(head_dir, *args, **kwargs)

    monkeypatch.setattr(stage, "_finetune", spy)
    return calls


def test_same_head_data_and_options_fine_tune_nothing(heads, image_root, tmp_path, runs):
    out = tmp_path / "ft"
    first = finetune(heads / "dense", image_root, out, verbose=False, **QUICK)
    assert len(runs) == 1 and not first.reused and first.why == "no earlier output"
    again = finetune(heads / "dense", image_root, out, verbose=False, **QUICK)
    assert len(runs) == 1 and again.reused and again.why == "unchanged"
    assert again.metrics == first.metrics and again.history["val_accuracy"] == pytest.approx(
        first.history["val_accuracy"]
    )
    changed = finetune(heads / "dense", image_root, out, verbose=False, **{**QUICK, "lr": 1e-3})
    assert len(runs) == 2 and changed.why == "options changed: lr 0.0003 \u2192 0.001"
    other = finetune(heads / "gap-dense", image_root, out, verbose=False, **{**QUICK, "lr": 1e-3})
    assert len(runs) == 3 and other.why == "the head changed (its manifest differs)"
    forced = finetune(heads / "gap-dense", image_root, out, verbose=False, retrain=True, **{**QUICK, "lr": 1e-3})
    assert len(runs) == 4 and forced.why == "--retrain"
    with open(out / "history.csv", "a") as handle:
        handle.write("\n")
    damaged = finetune(heads / "gap-dense", image_root, out, verbose=False, **{**QUICK, "lr": 1e-3})
    assert len(runs) == 5 and damaged.why.startswith("the earlier output does not verify")


def test_the_command_line_says_it_reused(heads, image_root, tmp_path, capsys, runs):
    argv = [
        "finetune",
        str(heads / "dense"),
        "--data",
        str(image_root),
        "--out",
        str(tmp_path / "ft"),
        "--epochs",
        "1",
        "--views",
        "1",
        "--no-augment",
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(argv) == 0 and len(runs) == 1
    first = capsys.readouterr().out
    assert main(argv) == 0 and len(runs) == 1
    reused_out = capsys.readouterr().out
    assert "reused (--retrain to fine-tune again)" in reused_out
    # the reused folder's figures are its making's: no cached-views line, and its time said as made earlier
    assert "cached views" not in reused_out and re.search(r"\(reused \(made in [\d.]+ s on 20\d\d-", reused_out)
    # a fine-tune again says its cached views were all reused, and which time it reports
    assert main(argv + ["--retrain"]) == 0 and len(runs) == 2
    again = capsys.readouterr().out
    pattern = r"cached views \((\w+), float32\): ([\d,]+) computed, ([\d,]+) reused from the cache"
    made, reused = re.search(pattern, first), re.search(pattern, again)
    assert made and reused and made.group(1) == reused.group(1), (first, again)
    total = int(made.group(2).replace(",", ""))
    assert total > 0 and made.group(3) == "0" and reused.group(2) == "0"
    assert int(reused.group(3).replace(",", "")) == total
    assert re.search(r"fine-tuned model: .* \(training \d+ s\)", again)


def test_a_folder_whose_images_changed_is_never_reused(heads, features_dir, tmp_path, runs):
    """'The same data' means the recorded images' bytes, not the same folder name."""
    import shutil

    from bneck.features import DatasetError

    data = tmp_path / "data"
    shutil.copytree(features_dir.parent / "data", data)
    out = tmp_path / "ft"
    finetune(heads / "dense", data, out, verbose=False, **QUICK)
    victim = sorted((data / "train" / "cats").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"changed")
    with pytest.raises(DatasetError, match="does not hold the images the model was made from"):
        finetune(heads / "dense", data, out, verbose=False, **QUICK)
    assert len(runs) == 1
