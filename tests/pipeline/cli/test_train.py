"""`bneck train`, `bneck evaluate` and `bneck predict` from the command line (pure)."""

from __future__ import annotations

import csv
import json

import pytest

from bneck.features import ConfigError, extract
from bneck.pipeline.cli import main
from bneck.pipeline.training.options import parse_size
from tests.generated import make_images

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def tiny_features_dir(tmp_path_factory, tiny):
    """Cats vs dogs, 40 generated images per class in train/validation/test, tiny-backbone features."""
    root = tmp_path_factory.mktemp("stage2_tiny")
    data = make_images(root / "data", 40)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    return root / "features"


@pytest.fixture(scope="module")
def tiny_image_root(tiny_features_dir):
    return tiny_features_dir.parent / "data"


def test_train_prints_leaderboard_and_evaluate_and_predict_work(tiny_features_dir, tiny_image_root, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["train", str(tiny_features_dir), "--classifier", "logreg,knn", "--out", str(models), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "model" in out and "val acc" in out and "test acc" in out and "fit s" in out and "this call" in out
    assert "logreg" in out and "knn" in out and "leaderboard.csv" in out

    assert main(["evaluate", str(models / "logreg"), str(tiny_features_dir / "test.h5")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "cats" in out and "confusion matrix" in out

    images = sorted((tiny_image_root / "test" / "dogs").glob("*.jpg"))[:3]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    out_csv = tmp_path / "pred.csv"
    assert (
        main(["predict", str(models / "logreg"), *map(str, images), str(tmp_path / "bad.png"), "--csv", str(out_csv)])
        == 1
    )  # 1: an input could not be classified
    captured = capsys.readouterr()
    assert captured.out.count("cats=") == 3 and "bad.png: error:" in captured.err
    assert "1 of 4 input(s) could not be classified" in captured.err
    rows = list(csv.DictReader(open(out_csv)))
    assert [r["path"] for r in rows] == [*map(str, images), str(tmp_path / "bad.png")]
    assert abs(float(rows[0]["cats"]) + float(rows[0]["dogs"]) - 1) < 1e-6
    assert rows[3]["error"] and rows[3]["class"] == ""
    assert main(["predict", str(models / "logreg"), str(tmp_path / "bad.png"), "--csv", str(out_csv)]) == 1
    assert list(csv.DictReader(open(out_csv)))[0].keys() >= {"cats", "dogs", "seen_in"}  # columns kept
    capsys.readouterr()
    assert main(["predict", str(models / "logreg"), *map(str, images)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in said[:3]] == list(map(str, images))  # in the order given
    assert said[-1].startswith("3 of 3 image(s) classified: ")
    # --top-k 1 --json: one document, the most probable class only, same order, a summary that adds up
    assert (
        main(
            [
                "predict",
                str(models / "logreg"),
                *map(str, reversed(images)),
                str(tmp_path / "bad.png"),
                "--top-k",
                "1",
                "--json",
            ]
        )
        == 1
    )
    doc = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in doc["predictions"]] == [*map(str, reversed(images)), str(tmp_path / "bad.png")]
    assert all(list(r["probabilities"]) == [r["class"]] for r in doc["predictions"][:3])
    assert "error" in doc["predictions"][3] and doc["summary"]["failed"] == 1
    assert sum(doc["summary"]["per_class"].values()) == doc["summary"]["classified"] == 3
    assert main(["predict", str(models / "logreg"), str(images[0]), "--top-k", "0"]) == 2
    assert "--top-k must be" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "{f}", "--classifier", "xgboost", "--out", "{t}/m"], "classifier must be one of"),
        (["train", "{t}/none", "--classifier", "logreg", "--out", "{t}/m"], "features folder not found"),
        (
            ["train", "{f}", "--classifier", "svm", "--out", "{t}/m", "--max-memory", "10K"],
            "needs its features in memory",
        ),
        (
            ["train", "{f}", "--classifier", "logreg", "--out", "{t}/m", "--max-memory", "lots"],
            "--max-memory must be a size",
        ),
        (["evaluate", "{t}/nomodel", "{f}/test.h5"], "has no manifest.json"),
        (["predict", "{t}/nomodel", "x.jpg"], "has no manifest.json"),
    ],
)
def test_stage2_user_errors_exit_2(tiny_features_dir, tmp_path, capsys, argv, message):
    argv = [a.format(f=tiny_features_dir, t=tmp_path) for a in argv]
    (tmp_path / "nomodel").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_parse_size():
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("1.5G") == int(1.5 * 2**30)
    assert parse_size("2000") == 2000
    with pytest.raises(ConfigError):
        parse_size("12 parsecs")


def test_classifier_given_twice_trains_both_and_an_empty_folder_is_not_zero_of_zero(
    tiny_features_dir, tmp_path, capsys
):
    """Issue 27: `--classifier logreg --classifier knn` trained knn alone; `predict` on a folder without
    images said "0 of 0 image(s) classified" and exited 0."""
    models = tmp_path / "models"
    args = ["train", str(tiny_features_dir), "--classifier", "logreg", "--classifier", "knn", "--out", str(models)]
    assert main([*args, "--quiet"]) == 0
    assert (models / "logreg" / "manifest.json").is_file() and (models / "knn" / "manifest.json").is_file()
    capsys.readouterr()
    assert (
        main(
            ["train", str(tiny_features_dir), "--classifier", "knn", "--classifier", "knn,logreg", "--out", str(models)]
        )
        == 2
    )
    assert "names each classifier once" in capsys.readouterr().err
    for name, content in (("empty", None), ("tiffs", "a.tif")):
        folder = tmp_path / name
        folder.mkdir()
        if content:
            (folder / content).write_bytes(b"II*\0")
        assert main(["predict", str(models / "logreg"), str(folder)]) == 1
        assert f"{folder}: error: a folder holding no images (extensions: .jpg" in capsys.readouterr().err


def test_weights_of_another_file_say_the_recorded_one_is_there(tiny_features_dir, tiny, tmp_path, capsys):
    """Issue 27: `predict --weights OTHER` said the recorded weights file was "no longer there" while it was,
    pointing away from the fix (leave --weights out)."""
    models = tmp_path / "models"
    assert main(["train", str(tiny_features_dir), "--classifier", "logreg", "--out", str(models), "--quiet"]) == 0
    other = tmp_path / "other.weights.h5"
    other.write_bytes(open(tiny["weights"], "rb").read()[:-16] + b"\0" * 16)  # there, and not the same bytes
    image = next((tiny_features_dir.parent / "data" / "test").rglob("*.jpg"))
    capsys.readouterr()
    assert main(["predict", str(models / "logreg"), str(image), "--weights", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"recorded at {tiny['weights']}, which is there: leave --weights out to use it" in err, err
    assert "no longer there" not in err
