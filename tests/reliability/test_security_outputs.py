"""Nothing bneck did not make is ever deleted or overwritten, whatever --out a careless user gives.

Every command that writes a folder is given, in a real process, every kind of
wrong ``--out``: its own input, a folder inside it or holding it, ``.``, ``~``, a
folder of someone's files, a file, a symlink to a folder (even one that carries
bneck's marker), and a bneck folder of another kind. Victim files planted there
must survive byte for byte, the command must exit 2 with one paragraph naming the
path, and it must be refused before any work (no cache is even created).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from bneck.core.folders import MARKER, write_marker
from bneck.features import extract
from bneck.pipeline import train
from tests.generated import cli_args, make_images
from tests.reliability.conftest import MOBILENET_ARGS


def tree(path: Path) -> dict:
    """Every entry under ``path`` (hidden ones too), links not followed: {relative: content digest}."""
    out = {}
    for current, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(current) / name
            rel = str(full.relative_to(path))
            if full.is_symlink():
                out[rel] = "link:" + os.readlink(full)
            elif full.is_file():
                out[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def plant_victims(folder: Path) -> Path:
    """Someone's files: text, binary, hidden, nested."""
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work\n")
    (folder / ".bashrc").write_text("export PATH=...\n")
    (folder / "sub" / "photo.bin").write_bytes(os.urandom(4096))
    return folder


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny):
    """Real inputs for every command: images, features, classifier folders, an old-format folder."""
    import joblib

    from bneck.pipeline.artifacts import load_classifier
    from tests.reliability.test_security_code import _set, resign

    root = tmp_path_factory.mktemp("outputs")
    data = make_images(root / "data", 2)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    train(root / "features", ["dense", "logreg"], root / "models", epochs=1, verbose=False)
    legacy = root / "legacy"
    shutil.copytree(root / "models" / "logreg", legacy)
    joblib.dump(load_classifier(str(legacy)).model, legacy / "model.joblib")
    (legacy / "model.skops").unlink()
    (legacy / MARKER).unlink()
    _set(legacy, model_file="model.joblib")
    resign(legacy, version=1)
    return root


TRAIN_SETTINGS = ["--set", 'train.classifiers=["logreg"]', "--set", "finetune.enabled=false", "--quiet"]


def run_settings(tiny: dict) -> list:
    """``bneck run``'s --set options for the tiny extractor, one classifier and no fine-tuning."""
    return [
        "--set",
        'extract.backbone="mobilenet"',
        "--set",
        "extract.alpha=0.25",
        "--set",
        f"extract.size={tiny['size']}",
        "--set",
        f"extract.weights={json.dumps(tiny['weights'])}",
        *TRAIN_SETTINGS,
    ]


COMMANDS = {  # name: (arguments before --out, given the tiny extractor; the input folder; the kind of folder it writes)
    "extract": (lambda m, t: ["extract", m / "data", *cli_args(t), "--quiet"], "data", "features"),
    "train": (lambda m, t: ["train", m / "features", "--classifier", "logreg", "--quiet"], "features", "models"),
    "finetune": (
        lambda m, t: ["finetune", m / "models" / "dense", "--data", m / "data", "--epochs", "1", "--quiet"],
        "models/dense",
        "finetuned",
    ),
    "run": (lambda m, t: ["run", "--data", m / "data", *run_settings(t)], "data", "run"),
    "demo": (lambda m, t: ["demo", "--data", m / "data", *cli_args(t), *TRAIN_SETTINGS], "data", "run"),
    "convert": (lambda m, t: ["convert", m / "legacy", "--trust-pickle"], "legacy", "classifier"),
    "ensemble": (
        lambda m, t: ["ensemble", m / "models" / "dense", m / "models" / "logreg", "--quiet"],
        "models/logreg",
        "ensemble",
    ),
}


def _bad_out(kind: str, made: Path, source: str, writes: str, work: Path):
    """Return (--out value, cwd, env, the folder whose every byte must survive)."""
    victims = plant_victims(work / "victims")
    if kind == "its input":
        return made / source, None, {}, made
    if kind == "inside its input":
        return made / source / "out", None, {}, made
    if kind == "a folder holding its input":
        return made, None, {}, made
    if kind == ".":
        return ".", victims, {}, victims
    if kind == "~":
        return "~", None, {"HOME": str(victims)}, victims
    if kind == "someone's folder":
        return victims, None, {}, victims
    if kind == "a file":
        return victims / "thesis.tex", None, {}, victims
    if kind == "a symlink to a bneck folder of the right kind":
        target = victims / "target"
        target.mkdir()
        write_marker(str(target), writes)
        (target / "keep.txt").write_text("mine")
        os.symlink(target, victims / "link")
        return victims / "link", None, {}, victims
    if kind == "a bneck folder of another kind":
        other = "models" if writes != "models" else "features"
        write_marker(str(victims), other)
        return victims, None, {}, victims
    raise ValueError(kind)


BAD_OUTS = [
    "its input",
    "inside its input",
    "a folder holding its input",
    ".",
    "~",
    "someone's folder",
    "a file",
    "a symlink to a bneck folder of the right kind",
    "a bneck folder of another kind",
]


@pytest.mark.pure
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_wrong_out_is_refused_before_work_and_nothing_is_touched(made, command, tmp_path, bneck, tiny):
    args, source, writes = COMMANDS[command]
    for i, kind in enumerate(BAD_OUTS):
        work = tmp_path / f"case{i}"
        work.mkdir()
        out, cwd, env, guarded = _bad_out(kind, made, source, writes, work)
        before = tree(guarded), tree(made)
        cache = work / "cache"
        done = bneck(work, [*args(made, tiny), "--out", out], cwd=cwd, env={**env, "BNECK_CACHE": str(cache)})
        assert done.returncode == 2, (command, kind, done.output)
        assert "Traceback" not in done.output and "--out" in done.output, (command, kind, done.output)
        assert (tree(guarded), tree(made)) == before, (command, kind)
        assert not cache.exists(), (command, kind)  # refused before any work


@pytest.mark.pure
def test_a_foreign_folder_where_a_classifier_goes_survives(made, tmp_path, bneck):
    models = tmp_path / "models"
    shutil.copytree(made / "models", models)
    shutil.rmtree(models / "logreg")
    plant_victims(models / "logreg")
    before = tree(models)
    done = bneck(tmp_path, ["train", made / "features", "--classifier", "dense,logreg", "--out", models, "--quiet"])
    assert done.returncode == 2 and "classifier folder" in done.output and str(models / "logreg") in done.output
    assert tree(models) == before  # not even dense was retrained: refused before any work


@pytest.mark.pure
@pytest.mark.parametrize(
    "kind",
    [
        "someone's file",
        "a symlink to someone's file",
        "inside the model folder",
        "someone's labels.csv with a path,class header",
    ],
)
def test_predict_never_overwrites_a_file_it_did_not_write(made, tmp_path, bneck, kind):
    victims = plant_victims(tmp_path / "victims")
    (victims / "labels.csv").write_text("path,class,annotator,notes\ncat.1.jpg,cats,alice,hand-labelled\n")
    model = tmp_path / "logreg"
    shutil.copytree(made / "models" / "logreg", model)
    csv = {
        "someone's file": victims / "thesis.tex",
        "a symlink to someone's file": tmp_path / "p.csv",
        "inside the model folder": model / "predictions.csv",
        "someone's labels.csv with a path,class header": victims / "labels.csv",
    }[kind]
    if kind == "a symlink to someone's file":
        os.symlink(victims / "thesis.tex", csv)
    before = tree(victims), tree(model)
    done = bneck(tmp_path, ["predict", model, made / "data" / "test" / "cats", "--csv", csv])
    assert done.returncode == 2 and "--csv" in done.output, done.output
    assert (tree(victims), tree(model)) == before
    again = bneck(tmp_path, ["predict", model, made / "data" / "test" / "cats", "--csv", tmp_path / "ok.csv"])
    assert (
        again.returncode == 0
        and bneck(  # its own earlier output it does replace
            tmp_path, ["predict", model, made / "data" / "test" / "cats", "--csv", tmp_path / "ok.csv"]
        ).returncode
        == 0
    )


@pytest.mark.extra("ray")
def test_a_symlinked_shards_folder_is_refused_before_ray_starts(made, tmp_path, bneck):
    out = tmp_path / "out"
    out.mkdir()
    write_marker(str(out), "features")
    victims = plant_victims(tmp_path / "victims")
    write_marker(str(victims), "shards")  # even one that looks like bneck's
    os.symlink(victims, out / "train.shards")
    before = tree(victims)
    done = bneck(
        tmp_path,
        ["extract", made / "data", "--out", out, *MOBILENET_ARGS, "--engine", "ray", "--quiet"],
        env={"BNECK_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 2 and "symbolic link" in done.output and "shards" in done.output
    assert tree(victims) == before and not (tmp_path / "cache").exists()


@pytest.mark.pure
def test_staged_replacement_removes_only_marked_folders(tmp_path):
    from bneck.core.folders import OutputError, check_folder, remove_owned, staged_folder

    victims = plant_victims(tmp_path / "victims")
    before = tree(victims)
    with pytest.raises(OutputError):
        remove_owned(str(victims), "classifier")
    with pytest.raises(OutputError):
        with staged_folder(str(victims), "classifier") as folder:
            (Path(folder) / "model").write_text("new")
    assert tree(victims) == before
    with staged_folder(str(tmp_path / "mine"), "classifier") as folder:
        (Path(folder) / "a").write_text("1")
    with staged_folder(str(tmp_path / "mine"), "classifier") as folder:  # its own: replaced
        (Path(folder) / "b").write_text("2")
    assert sorted(os.listdir(tmp_path / "mine")) == [MARKER, "b"]
    assert json.loads((tmp_path / "mine" / MARKER).read_text())["kind"] == "classifier"
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no temporaries left
    (tmp_path / "empty").mkdir()  # an empty folder given as the output: taken, and nothing left beside it
    with staged_folder(str(tmp_path / "empty"), "classifier") as folder:
        (Path(folder) / "c").write_text("3")
    assert sorted(os.listdir(tmp_path / "empty")) == [MARKER, "c"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
    for nothing in ("", "  "):
        with pytest.raises(OutputError, match="must name a folder"):
            check_folder(nothing, "classifier")
