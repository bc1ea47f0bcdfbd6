"""``bneck run`` / ``bneck demo`` end to end on generated images and the tiny backbone, and its config rules."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from bneck import pipeline
from bneck.features import DatasetError
from bneck.pipeline.cli import main
from bneck.pipeline.runner import demo as demo_module
from bneck.pipeline.runner.config import load_config
from tests.conftest import ROOT
from tests.generated import make_images

pytestmark = pytest.mark.pure

CONFIG = """
data = "{data}"
out = "{out}"
[extract]
backbone = "mobilenet"
alpha = 0.25
size = {size}
weights = "{weights}"
cache_dir = "{cache}"
[train]
classifiers = ["dense", "logreg"]
epochs = 5
[train.logreg]
pca = 16
[finetune]
epochs = 2
views = 2
[report]
worst = 6
"""


@pytest.fixture(scope="module")
def tiny_image_root(tmp_path_factory):
    """Cats vs dogs, 40 generated images per class in train/validation/test."""
    return make_images(tmp_path_factory.mktemp("tiny_run") / "data", 40)


@pytest.fixture(scope="module")
def first_run(tiny_image_root, tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    config = folder / "run.toml"
    config.write_text(
        CONFIG.format(
            data=tiny_image_root, out=folder / "out", size=tiny["size"], weights=tiny["weights"], cache=folder / "cache"
        )
    )
    result = pipeline.run(str(config), verbose=False)  # the public API the CLI uses
    return config, result


def test_run_writes_every_stage_and_a_report_holding_the_leaderboard(first_run):
    config, result = first_run
    out = Path(result.folder)
    for name in (
        "config.toml",
        "run.json",
        "leaderboard.csv",
        "report.md",
        "report.html",
        "features/train.h5",
        "models/dense/model.keras",
        "models/logreg/model.skops",
        "finetuned/model.keras",
        "finetuned/predictions.csv",
        "worst_test.png",
    ):
        assert (out / name).is_file(), name
    assert result.stages.extract.forward_images == 240  # 3 splits x 80 generated images
    assert result.stages.finetune_head == "dense" and not result.stages.finetune.reused
    board = list(csv.DictReader(open(out / "leaderboard.csv")))
    ensemble = ["ensemble"] if result.stages.ensemble else []  # when selection combined two or more models
    assert sorted(r["model"] for r in board) == sorted(["dense", "logreg", "fine-tuned dense", *ensemble])
    page = (out / "report.html").read_text()
    for row in result.leaderboard:  # the leaderboard, with the numbers
        assert row.name in page
        assert f"{100 * row.accuracy('test'):.1f}%" in page
    inlined = re.findall(r"<img src='data:image/png;base64,[A-Za-z0-9+/=]{100,}'", page)
    assert len(inlined) >= 4  # curves x2, every model's confusion matrix, worst mistakes: all inside the file
    assert "test confusion matrix of every model" in page and "Data health" in page and "Per class (test)" in page
    assert "src='/" not in page and "src='http" not in page
    written = (out / "report.md").read_text()
    assert "](<worst_test.png>)" in written  # linked relative to the run folder
    from urllib.parse import unquote

    links = re.findall(r"\]\(<([^>]+)>\)", written)
    assert len(links) >= 4 and "confusion_all.png" in links
    missing = [link for link in links if not (out / unquote(link)).is_file()]
    assert missing == []  # report.md renders whole: every figure it links is in the run folder
    md = re.sub(r"\\(.)", r"\1", written)  # the text as a Markdown reader sees it (names are escaped)
    assert "| rank | model | val acc [95% CI] | test acc [95% CI] | fit s |" in md
    # every accuracy with its Wilson interval; the first model against the runner-up, paired; what to do next
    for row in result.leaderboard:
        low, high = row.interval("test")
        assert f"{100 * row.accuracy('test'):.1f}% [{100 * low:.1f}, {100 * high:.1f}]" in md
    first, second = result.leaderboard[:2]
    assert f"{first.name} (first on validation) against the runner-up {second.name}: " in md and "McNemar p" in md
    assert f"bneck predict {first.folder}" in md and "bneck export " in md
    # every likely label error the report counts is a row of label_issues.csv, with what it looks like
    listed = list(csv.DictReader(open(out / "label_issues.csv", newline="", encoding="utf-8")))
    counted = int(re.search(r"Likely label errors: (\d+) training image", md).group(1))
    assert len(listed) == counted and all(0 <= float(r["given_probability"]) < 0.05 for r in listed)
    assert open(out / "label_issues.csv").readline().strip() == (
        "path,given_class,likely_class,likely_probability,given_probability"
    )
    # the resolved config reloads to the same settings
    assert load_config(str(out / "config.toml")) == result.config


def test_the_fine_tuned_row_says_what_it_gained_over_the_best_frozen_model_on_the_same_images(first_run):
    from scipy.stats import binomtest

    _, result = first_run
    out = Path(result.folder)
    frozen = max(result.stages.train, key=lambda r: r.accuracy("validation"))

    def right(folder):
        rows = csv.DictReader(open(Path(folder) / "predictions.csv"))
        return {r["path"]: r["true"] == r["predicted"] for r in rows if r["split"] == "test"}

    ft, fr = right(out / "finetuned"), right(frozen.folder)
    assert set(ft) == set(fr) and len(ft) == 80  # every test image, paired by path
    b = sum(ft[p] and not fr[p] for p in ft)
    c = sum(fr[p] and not ft[p] for p in ft)
    row = next(r for r in csv.DictReader(open(out / "leaderboard.csv")) if r["kind"] == "fine-tuned")
    assert row["versus"] == frozen.name
    assert float(row["test_gain"]) == pytest.approx((b - c) / 80, abs=1e-4)
    assert float(row["gain_low"]) <= float(row["test_gain"]) <= float(row["gain_high"])
    expected_p = 1.0 if b + c == 0 else binomtest(b, b + c).pvalue
    assert float(row["p_value"]) == pytest.approx(expected_p, rel=1e-2)
    assert float(row["test_gain"]) == pytest.approx(
        result.stages.finetune.accuracy("test") - frozen.accuracy("test"), abs=1e-4
    )
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["finetune"]["versus"]["model"] == frozen.name
    assert "McNemar p = " in (out / "report.md").read_text()
    # frozen classifiers carry no gain
    assert all(r["test_gain"] == "" for r in csv.DictReader(open(out / "leaderboard.csv")) if r["kind"] == "classifier")


def test_the_ensemble_row_is_the_weighted_mean_of_its_members_and_never_below_the_best_single_model(first_run):
    """The run's ensemble, recomputed here from its members' own predictions files and the weights its
    manifest records; or, when selection kept one model, no row and the run says so."""
    _, result = first_run
    out = Path(result.folder)
    singles = [r for r in result.leaderboard if r.kind != "ensemble"]
    best_single = max(r.accuracy("validation") for r in singles)
    stages = json.loads((out / "run.json").read_text())["stages"]
    if result.stages.ensemble is None:
        assert "alone" in stages["ensemble"]["none"] and not (out / "ensemble").exists()
        assert "Ensemble: none (selection kept" in (out / "report.md").read_text()
        return
    manifest = json.loads((out / "ensemble" / "manifest.json").read_text())
    members = {m["name"]: m for m in manifest["members"]}
    assert sum(m["weight"] for m in members.values()) == manifest["kept_round"] and len(members) >= 2

    def probabilities(folder):
        rows = csv.DictReader(open(folder / "predictions.csv"))
        return {(r["split"], r["path"]): [float(r["cats"]), float(r["dogs"])] for r in rows}

    mine = probabilities(out / "ensemble")
    theirs = {n: probabilities((out / "ensemble" / m["folder"]).resolve()) for n, m in members.items()}
    total = sum(m["weight"] for m in members.values())
    for key, got in mine.items():
        expected = sum(m["weight"] * np.asarray(theirs[n][key]) for n, m in members.items()) / total
        assert np.allclose(got, expected, atol=2e-6), key
    assert result.stages.ensemble.accuracy("validation") >= best_single  # by construction
    assert result.leaderboard[0].kind == "ensemble"  # first among equals (its validation loss is lower)
    row = next(r for r in csv.DictReader(open(out / "leaderboard.csv")) if r["kind"] == "ensemble")
    assert row["versus"] == singles[0].name and row["p_value"] != ""
    assert stages["ensemble"]["members"] == {n: m["weight"] for n, m in members.items()}
    assert "Ensemble of " in (out / "report.md").read_text()


def test_second_run_changing_one_classifier_retrains_only_it_and_extracts_nothing(first_run, capsys):
    config, result = first_run
    had_ensemble = (Path(result.folder) / "ensemble").is_dir()
    assert main(["run", str(config), "--set", "train.logreg.pca=8", "--set", "ensemble.max_size=1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    stages = json.loads((Path(result.folder) / "run.json").read_text())["stages"]
    assert stages["extract"]["forward_images"] == 0 and not stages["extract"]["model_built"]
    assert all(s["computed"] == 0 for s in stages["extract"]["splits"].values())
    assert stages["train"]["dense"]["reused"] and not stages["train"]["logreg"]["reused"]
    assert stages["finetune"]["reused"]
    manifest = json.loads((Path(result.folder) / "models/logreg/manifest.json").read_text())
    assert manifest["config"]["pca"] == 8
    assert "every row from cache" in printed and "reused: dense" in printed
    made = json.loads((Path(result.folder) / "finetuned/manifest.json").read_text())["created_utc"]
    # a reused stage says when it was made and what it took then, not as if the time were spent again
    assert f" on {made.replace('T', ' ')[:16]} UTC)" in printed and "fine-tune: reused (made in " in printed
    # one round of selection keeps the best single model: no ensemble row, no stale folder, said why
    assert "kept" in stages["ensemble"]["none"] and "alone" in stages["ensemble"]["none"]
    assert ("was removed" in stages["ensemble"]["none"]) == had_ensemble  # said, when an earlier one is gone
    assert not (Path(result.folder) / "ensemble").exists()
    assert "ensemble" not in {r["model"] for r in csv.DictReader(open(Path(result.folder) / "leaderboard.csv"))}


def test_a_fine_tuning_that_kept_the_head_adds_no_identical_row(first_run, tmp_path, capsys):
    config, _ = first_run
    out = tmp_path / "kept"
    argv = ["run", str(config), "--out", str(out), "--set", "finetune.lr=1e-12", "--set", "ensemble.enabled=false"]
    assert main([*argv, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "fine-tune: kept the dense head: " in printed and "no second, identical row" in printed
    board = [r["model"] for r in csv.DictReader(open(out / "leaderboard.csv"))]
    assert "fine-tuned dense" not in board and "dense" in board
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["finetune"]["skipped"].startswith("kept the dense head")
    assert "Fine-tuning: kept the dense head" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "args,message",
    [  # every config mistake: runner/test_config.py
        (["--set", 'extract.backbon="vgg16"'], "unknown config key 'extract.backbon'; allowed here: backbone"),
        (["--set", "finetune"], "--set takes KEY=VALUE"),
    ],
)
def test_config_mistakes_from_the_command_line_exit_2_before_anything_starts(
    first_run, tmp_path, capsys, args, message
):
    config, _ = first_run
    assert main(["run", str(config), "--out", str(tmp_path / "x")] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing started


def test_demo_archive_is_checked_by_size_and_recorded_sha256(tmp_path, monkeypatch):
    monkeypatch.delenv("BNECK_DEMO_SHA256", raising=False)
    record = tmp_path / "archive.sha256"
    short = tmp_path / "short.zip"
    short.write_bytes(b"PK\x03\x04 not the archive")
    with pytest.raises(DatasetError, match="not the published 68,606,236"):
        demo_module.check_archive(str(short), str(record))
    assert not short.exists()
    good = tmp_path / "good.zip"
    with open(good, "wb") as handle:
        handle.truncate(demo_module.ARCHIVE_BYTES)
    sha = demo_module.check_archive(str(good), str(record))
    assert record.read_text().strip() == sha  # first download: recorded
    changed = tmp_path / "changed.zip"
    with open(changed, "wb") as handle:
        handle.truncate(demo_module.ARCHIVE_BYTES)
        handle.seek(1000)
        handle.write(b"x")
    with pytest.raises(DatasetError, match=f"not the expected {sha}"):
        demo_module.check_archive(str(changed), str(record))
    assert not changed.exists()


def test_demo_offline_without_data_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_module, "ARCHIVE_URL", "http://127.0.0.1:9/cats_and_dogs_filtered.zip")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot download the demo data" in err and "bneck demo --data DATA_DIR" in err
    assert not os.path.exists(tmp_path / "demo")


def test_demo_on_local_data_runs_the_reference_pipeline(tiny_image_root, tiny, tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--data",
                str(tiny_image_root),
                "--out",
                str(tmp_path / "demo"),
                "--backbone",
                "mobilenet",
                "--alpha",
                "0.25",
                "--size",
                str(tiny["size"]),
                "--weights",
                tiny["weights"],
                "--set",
                "train.epochs=3",
                "--set",
                "finetune.epochs=1",
                "--set",
                "finetune.views=1",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # the head made for fine-tuning is fine-tuned: a row of its own, or (no epoch beat it) said once, no row
    assert ("fine-tuned gap-dense  " in printed) != ("kept the gap-dense head" in printed) and "report.html" in printed
    extracted = printed.split("extract: ")[1].splitlines()[0]  # which runtime extracted, and why
    assert "images through the network; runtime " in extracted and "(" in extracted
    cfg = load_config(str(tmp_path / "demo" / "config.toml"))
    assert cfg["extract"]["backbone"] == "mobilenet" and cfg["extract"]["alpha"] == 0.25
    assert cfg["train"]["classifiers"] == ["gap-dense", "logreg", "svm", "knn"]
    # predict and export point at the same model
    nexts = printed[printed.index("next: ") :].splitlines()
    predicted = nexts[0].split("bneck predict ")[1].split(" IMAGES")[0]
    assert nexts[1].strip().startswith(f"bneck export {predicted} --out ")


def test_same_inputs_same_seed_same_results_with_unreadable_files(tiny, tmp_path):
    """Two `bneck run` processes on a folder holding broken images give identical numbers, and the
    terminal shows the extraction table and what was quarantined (a network built in the background
    for images that never decoded used to race the next stage's seeded initialisation)."""
    import subprocess
    import sys

    data = make_images(tmp_path / "data", 12)  # small: the claim is about sameness, not accuracy
    (data / "train" / "cats" / "empty.jpg").write_bytes(b"")
    a_dog = next((data / "train" / "dogs").glob("*.jpg"))
    (data / "train" / "dogs" / "cut.jpg").write_bytes(a_dog.read_bytes()[:900])
    (data / "test" / "cats" / "junk.png").write_bytes(b"not an image")
    runs = []
    for i in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bneck",
                "run",
                "--data",
                str(data),
                "--out",
                str(tmp_path / f"run{i}"),
                "--set",
                'extract.backbone="mobilenet"',
                "--set",
                "extract.alpha=0.25",
                "--set",
                f"extract.size={tiny['size']}",
                "--set",
                f'extract.weights="{tiny["weights"]}"',
                "--set",
                'train.classifiers=["dense", "logreg"]',
                "--set",
                "train.epochs=4",
                "--set",
                "finetune.epochs=1",
                "--set",
                "finetune.views=2",
                "--set",
                f'extract.cache_dir="{tmp_path / "cache"}"',
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(done)
        for line in (
            "split       images  classes  quarantined",
            "quarantined (3):",
            "train/cats/empty.jpg",
            "train/dogs/cut.jpg",
            "test/cats/junk.png",
            "== train",
            "== fine-tune",
            "== report",
        ):
            assert line in done.stderr, (line, done.stderr[-2000:])
    boards = [
        [
            (r["model"], r["val_accuracy"], r["test_accuracy"])
            for r in json.loads((tmp_path / f"run{i}" / "run.json").read_text())["leaderboard"]
        ]
        for i in range(2)
    ]
    assert boards[0] == boards[1]
    for name in ("models/dense/metrics.json", "models/logreg/metrics.json", "finetuned/predictions.csv"):
        a, b = (tmp_path / f"run{i}" / name for i in range(2))
        if name.endswith(".json"):
            drop = ("fit_seconds", "epoch_seconds")
            assert {k: v for k, v in json.loads(a.read_text()).items() if k not in drop} == {
                k: v for k, v in json.loads(b.read_text()).items() if k not in drop
            }, name
        else:
            assert a.read_text() == b.read_text(), name


def test_config_paths_are_relative_to_the_file_and_the_saved_config_runs_from_anywhere(
    tiny_image_root, tiny, tmp_path, monkeypatch, capsys
):
    import shutil

    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    shutil.copytree(tiny_image_root, project / "data")
    (project / "configs" / "exp.toml").write_text(
        'data = "../data"\nout = "../runs/exp"\n[extract]\nbackbone = "mobilenet"\nalpha = 0.25\n'
        f'size = {tiny["size"]}\nweights = "{tiny["weights"]}"\n'
        'cache_dir = "../cache"\n[train]\nclassifiers = ["logreg"]\n[finetune]\nenabled = false\n'
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["run", str(project / "configs" / "exp.toml"), "--quiet"]) == 0
    saved = load_config(str(project / "runs" / "exp" / "config.toml"))
    assert saved["data"] == str(project / "data") and saved["extract"]["cache_dir"] == str(project / "cache")
    assert (project / "runs" / "exp" / "report.html").is_file() and (project / "cache").is_dir()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["run", "project/runs/exp/config.toml"]) == 0  # a relative path to it, from another folder
    assert "every row from cache" in capsys.readouterr().out
    shutil.move(project / "runs" / "exp", tmp_path / "moved")  # a run folder moved: never rerun at the old place
    assert main(["run", "moved/config.toml"]) == 2
    said = capsys.readouterr().err
    assert f"now lies at {tmp_path / 'moved'}" in said and f"--out {tmp_path / 'moved'}" in said
    assert not (project / "runs" / "exp").exists()
    assert main(["run", "moved/config.toml", "--out", "moved", "--quiet"]) == 0


def test_a_forged_predictions_file_changes_no_gain(first_run, tmp_path):
    """A re-signed predictions.csv cannot move the gain: the run's own test images and labels are the truth,
    and the predictions must agree with the model's own test accuracy (else no gain, and why)."""
    import dataclasses
    import io
    import shutil

    from bneck.pipeline.runner.gain import paired_gain, run_test_truth
    from tests.reliability.test_security_code import resign

    _, result = first_run
    truth = run_test_truth(result.folder)

    def now(r):  # the folder as it is now (other tests in this module run the same folder again)
        return dataclasses.replace(r, metrics=json.loads((Path(r.folder) / "metrics.json").read_text()))

    ft = now(result.stages.finetune)
    frozen = now(max(result.stages.train, key=lambda r: r.accuracy("validation")))
    honest, why = paired_gain(ft, frozen, truth)
    assert honest is not None and why == ""

    def forged(name, change):
        folder = tmp_path / name
        shutil.copytree(frozen.folder, folder)
        rows = list(csv.reader(io.StringIO((folder / "predictions.csv").read_text(), newline="")))
        out = io.StringIO()
        csv.writer(out).writerows([rows[0]] + [change(r) if r[0] == "test" else r for r in rows[1:]])
        (folder / "predictions.csv").write_text(out.getvalue())
        resign(folder)
        return paired_gain(ft, dataclasses.replace(frozen, folder=str(folder)), truth)

    other = {"cats": "dogs", "dogs": "cats"}
    gain, why = forged("all-wrong", lambda r: [r[0], r[1], r[2], other[r[2]], *r[4:]])
    assert gain is None and "disagrees with the test accuracy in its own metrics" in why
    gain, why = forged("made-up", lambda r: [r[0], "../../etc/" + r[1], *r[2:]])
    assert gain is None and f"does not score exactly the run's {len(truth)} test images" in why
    gain, why = forged("true-column", lambda r: [r[0], r[1], other[r[2]], *r[3:]])  # the file's truth is ignored
    assert gain == honest and why == ""
