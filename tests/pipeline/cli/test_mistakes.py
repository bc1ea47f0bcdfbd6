"""Every mistake is refused before any work, in one paragraph naming the thing, exit 2.

Each case runs the real command line on generated images with the tiny backbone (pure);
"before any work" is checked by what does not exist afterwards: no run folder, no cache.
"""

from __future__ import annotations

import shutil

import pytest

from bneck.pipeline.cli import main
from tests.generated import cli_args, make_images

pytestmark = pytest.mark.pure


def _run(tiny) -> list[str]:
    """The options of every `bneck run` here: the tiny backbone, two quick classifiers, quiet."""
    return [
        "--set",
        f'extract.backbone="{tiny["backbone"]}"',
        "--set",
        f"extract.alpha={tiny['alpha']}",
        "--set",
        f"extract.size={tiny['size']}",
        "--set",
        f'extract.weights="{tiny["weights"]}"',
        "--set",
        'train.classifiers=["dense", "logreg"]',
        "--quiet",
    ]


def _one_class(tmp_path):
    data = make_images(tmp_path / "d1", 3)
    for split in ("train", "validation", "test"):
        shutil.rmtree(data / split / "dogs")
    return data


def _images_in_the_root(tmp_path):
    made = make_images(tmp_path / "made", 2, splits=("train",))
    data = tmp_path / "flat"
    data.mkdir()
    for name in ("cat.0.jpg", "cat.1.jpg"):
        shutil.copy(made / "train" / "cats" / name, data / name)
    return data


CASES = {  # name: (extra arguments, what the message must say)
    "--out is a file": (lambda t, d: ["--out", str(t / "afile")], "is a regular file, not a folder"),
    "cache_dir is a file": (lambda t, d: ["--set", f'extract.cache_dir="{t / "afile"}"'], "exists and is not a folder"),
    "one class": (lambda t, d: ["--data", str(_one_class(t))], "holds one class ('cats')"),
    "pca above the training images": (
        lambda t, d: ["--set", "train.logreg.pca=500"],
        "`pca = 500` under [train] asks for more components than the 6 training images",
    ),
    "pca negative": (lambda t, d: ["--set", "train.logreg.pca=-3"], "pca must be a finite number > 0"),
    "one fold": (lambda t, d: ["--set", "train.folds=1"], "train.folds must be an integer >= 2"),
    "more folds than images": (
        lambda t, d: ["--set", 'train.search="kfold"', "--set", "train.folds=7"],
        "`folds = 7` under [train] is more than the 6 image(s) of the smallest class",
    ),
    "negative seed": (lambda t, d: ["--seed", "-1"], "seed must be an integer >= 0"),
    "negative split seed": (lambda t, d: ["--set", "extract.seed=-2"], "extract.seed must be an integer >= 0"),
    "lr infinite": (lambda t, d: ["--set", "finetune.lr=inf"], "finetune.lr must be a finite number > 0"),
    "lr not a number": (lambda t, d: ["--set", "train.lr=nan"], "train.lr must be a finite number > 0"),
    "epochs -1": (lambda t, d: ["--set", "train.epochs=-1"], "train.epochs must be an integer >= 1"),
    "an unknown runtime": (lambda t, d: ["--set", 'extract.runtime="cuda"'], "extract.runtime must be one of"),
    "a split that does not sum to 1": (
        lambda t, d: ["--set", "extract.split=[0.5, 0.5, 0.5]"],
        "`split` under [extract] must be three",
    ),
    "images directly in the data folder": (
        lambda t, d: ["--data", str(_images_in_the_root(t))],
        "holds 2 image(s) directly",
    ),
    "a file as the data folder": (lambda t, d: ["--data", str(t / "afile")], "is a file, not a data folder"),
    "a classifier twice": (lambda t, d: ["--set", 'train.classifiers=["dense", "dense"]'], "each once"),
    # round 2 of the outside attack: values accepted at load that failed after the work
    "a seed numpy cannot take": (
        lambda t, d: ["--seed", "4294967296"],
        "seed must be an integer >= 0 and <= 4294967295",
    ),
    "a learning rate of 1e300": (
        lambda t, d: ["--set", "train.lr=1e300"],
        "train.lr must be a finite number > 0 and <= 10",
    ),
    "an image size of 40000": (lambda t, d: ["--set", "extract.size=40000"], "from 32 to 1024 pixels"),
    "an unfreeze point the base lacks": (
        lambda t, d: ["--set", 'finetune.unfreeze_from="nope"'],
        "config key finetune.unfreeze_from = 'nope' does not work",
    ),
    "a cut below the unfreeze point": (
        lambda t, d: ["--set", 'extract.layer="input_layer"'],
        "does not work with extract.layer = 'input_layer'",
    ),
    "a layer the backbone lacks": (
        lambda t, d: ["--set", 'extract.layer="nope"', "--set", "finetune.enabled=false"],
        "`layer` under [extract] must name a layer of mobilenet",
    ),
    # issue 16: the head to fine-tune must be one the run trains; the new recipe options are bounded
    "a fine-tune head the run does not train": (
        lambda t, d: ["--set", 'train.classifiers=["gap-dense", "logreg"]', "--set", 'finetune.head="dense"'],
        "config key finetune.head = 'dense' names a head this run does not train",
    ),
    "an unknown fine-tune head": (lambda t, d: ["--set", 'finetune.head="svm"'], "finetune.head must be one of"),
    "an unknown schedule": (lambda t, d: ["--set", 'finetune.schedule="step"'], "finetune.schedule must be one of"),
    "label smoothing of 1": (
        lambda t, d: ["--set", "finetune.label_smoothing=1"],
        "finetune.label_smoothing must be a finite number >= 0 and < 1",
    ),
    "a warm-up over 1": (lambda t, d: ["--set", "finetune.warmup=1.5"], "finetune.warmup must be"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_refuses_each_mistake_before_any_work(tmp_path, capsys, case, isolated_cache, tiny):
    data = make_images(tmp_path / "data", 3)
    (tmp_path / "afile").write_text("not a folder")
    extra, message = CASES[case]
    argv = ["run", "--data", str(data), "--out", str(tmp_path / "run"), *_run(tiny), *extra(tmp_path, data)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists() and not isolated_cache.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "{t}/afile", "--classifier", "logreg", "--out", "{t}/m"], "is a file, not a features folder"),
        (["evaluate", "{t}/nomodel", "{t}/afile"], "model folder not found"),
        (["evaluate", "{t}/afile", "{t}/afile"], "is a file, not a model folder"),
        (["predict", "{t}", "x.jpg"], "has no manifest.json"),
        (["extract", "{t}/afile", "--out", "{t}/o"], "is a file, not a data folder"),
    ],
)
def test_a_file_for_a_folder_and_a_folder_for_a_file_say_so(tmp_path, capsys, argv, message):
    (tmp_path / "afile").write_text("x")
    assert main([a.format(t=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_evaluate_given_a_folder_for_the_feature_file_says_so(tmp_path, capsys):
    from bneck.features import FeatureFileError, read_features

    with pytest.raises(FeatureFileError, match="is a folder, not a feature file"):
        read_features(str(tmp_path))


def test_cross_split_duplicates_are_reported_and_recorded(tmp_path, capsys, tiny):
    from bneck.features import read_features

    data = make_images(tmp_path / "data", 2)
    twin = sorted((data / "train" / "cats").iterdir())[0]
    shutil.copy(twin, data / "test" / "cats" / "same_bytes.jpg")
    assert main(["extract", str(data), "--out", str(tmp_path / "f"), *cli_args(tiny), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) appear in more than one split" in out
    assert f"train/cats/{twin.name} = test/cats/same_bytes.jpg" in out
    recorded = read_features(str(tmp_path / "f" / "test.h5")).attrs["cross_split_duplicates"]
    assert recorded == [
        {
            "sha256": recorded[0]["sha256"],
            "paths": {"train": [f"train/cats/{twin.name}"], "test": ["test/cats/same_bytes.jpg"]},
        }
    ]


def test_a_refused_layer_leaves_no_cache_entry_and_no_marked_folder(tmp_path, capsys, isolated_cache, tiny):
    data = make_images(tmp_path / "data", 1)
    assert (
        main(["extract", str(data), "--out", str(tmp_path / "f"), *cli_args(tiny), "--layer", "nope", "--quiet"]) == 2
    )
    assert "--layer must name a layer" in capsys.readouterr().err
    assert not (tmp_path / "f").exists() and not isolated_cache.exists()


def test_something_else_under_a_file_name_of_a_run_folder_is_refused_before_work(
    tmp_path, capsys, isolated_cache, tiny
):
    from bneck.core.folders import write_marker

    run = tmp_path / "run"
    run.mkdir()
    write_marker(str(run), "run")
    (run / "report.html").mkdir()
    data = make_images(tmp_path / "data", 3)
    assert main(["run", "--data", str(data), "--out", str(run), *_run(tiny)]) == 2
    err = capsys.readouterr().err
    assert "holds report.html, which is a folder" in err and "Traceback" not in err
    assert not isolated_cache.exists() and sorted(p.name for p in run.iterdir()) == [
        ".bneck-folder.json",
        "report.html",
    ]


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_a_fifo_named_like_a_feature_file_is_called_what_it_is(tmp_path, capsys, command):
    import os

    folder = tmp_path / "features"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        os.mkfifo(folder / f"{split}.h5")
    (tmp_path / "model").mkdir()
    argv = {
        "evaluate": ["evaluate", str(tmp_path / "model"), str(folder / "test.h5")],
        "train": ["train", str(folder), "--classifier", "logreg", "--out", str(tmp_path / "m")],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ("a FIFO" in err or "has no manifest.json" in err) and "not found" not in err, err


def test_names_that_break_formats_do_not_break_a_run(tmp_path, capsys, tiny):
    """A class named like a formula, a data folder named with an emoji and a DEL: the run works, and
    its saved config.toml runs again from another folder."""
    data = make_images(tmp_path / "data \U0001f600\x7f", 3)
    for split in ("train", "validation", "test"):
        (data / split / "dogs").rename(data / split / "$\\foo{$")
    run = tmp_path / "run"
    argv = [
        "run",
        "--data",
        str(data),
        "--out",
        str(run),
        *_run(tiny)[:-3],
        "--set",
        'train.classifiers=["logreg"]',
        "--set",
        "finetune.enabled=false",
        "--quiet",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert main(["run", str(run / "config.toml"), "--quiet"]) == 0, capsys.readouterr().err
    assert "every row from cache" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-3", "5000"])
def test_predict_batch_size_out_of_range_is_one_paragraph_before_any_work(tmp_path, capsys, value):
    assert main(["predict", str(tmp_path / "no-model"), "x.jpg", "--batch-size", value]) == 2
    err = capsys.readouterr().err
    assert "--batch-size must be an integer from 1 to 4096" in err and f"Received: {int(value)}." in err
    assert "Traceback" not in err and "no manifest" not in err  # refused before the model is even looked at
