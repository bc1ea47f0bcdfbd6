"""Nothing outside a folder leaks into what bneck writes.

A run folder handed over, or left open on a shared machine, gets a figure swapped for
a symlink to a secret, an unlisted file, or a re-signed manifest naming the link. The
rerun's report must never contain the secret's bytes: figures are inlined only from
model folders that hold exactly their listed regular files. And the report's grid of
misclassified images opens only images inside the data folder, whatever path a
(re-signed) predictions file names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from bneck.core.files import path_inside
from bneck.pipeline.runner.report import worst_grid
from tests.conftest import DATA, copy_subset
from tests.reliability.test_security_code import resign


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A private PNG outside every folder bneck is given."""
    path = tmp_path_factory.mktemp("private") / "secret.png"
    Image.open(DATA / "test" / "dogs" / "dog.1700.jpg").resize((97, 61)).save(path)
    return path


def _run(bneck, tmp_path, data, out):
    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{data}"\nout = "{out}"\n[extract]\nbackbone = "mobilenet"\nalpha = 0.25\n'
        f'size = 224\n[train]\nclassifiers = ["dense", "logreg"]\nepochs = 2\n'
        f"[finetune]\nenabled = false\n"
    )
    return bneck(tmp_path, ["run", config, "--quiet"])


def _swap_in_symlink(folder: Path, secret: Path) -> None:
    (folder / "curves.png").unlink()
    os.symlink(secret, folder / "curves.png")


def _add_unlisted_link(folder: Path, secret: Path) -> None:
    os.symlink(secret, folder / "curves2.png")


def _swap_in_symlink_and_resign(folder: Path, secret: Path) -> None:
    _swap_in_symlink(folder, secret)
    resign(folder)  # hashes the link's target: the old code trusted exactly this


def _add_unlisted_copy(folder: Path, secret: Path) -> None:
    shutil.copy(secret, folder / "curves.png")  # a regular file with the secret, not re-signed


@pytest.mark.parametrize(
    "plant",
    [_swap_in_symlink, _add_unlisted_link, _swap_in_symlink_and_resign, _add_unlisted_copy],
    ids=lambda p: p.__name__.strip("_"),
)
def test_a_secret_planted_in_a_run_folder_never_reaches_the_report(tmp_path, bneck, secret, plant):
    data = copy_subset(tmp_path / "data", 2)
    out = tmp_path / "run"
    assert _run(bneck, tmp_path, data, out).returncode == 0
    plant(out / "models" / "dense", secret)
    done = bneck(tmp_path, ["run", out / "config.toml", "--quiet"])
    assert done.returncode == 0, done.output
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert not stages["train"]["dense"]["reused"] and stages["train"]["logreg"]["reused"]  # rebuilt, not read
    secret_b64 = base64.b64encode(secret.read_bytes()).decode()
    for name in ("report.html", "report.md"):
        assert secret_b64[:200] not in (out / name).read_text()
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    for folder, _, files in os.walk(out):  # no copy of the secret anywhere in the run folder
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                assert hashlib.sha256(path.read_bytes()).hexdigest() != digest, path


def test_the_mistakes_grid_opens_only_images_inside_the_data_folder(tmp_path, secret):
    data = copy_subset(tmp_path / "data", 1, splits=("test",))
    inside = "test/cats/" + os.listdir(data / "test" / "cats")[0]
    escapes = [os.path.relpath(secret, data), str(secret), "test/cats/../../../" + secret.name]
    os.symlink(secret, data / "test" / "cats" / "link.jpg")
    escapes.append("test/cats/link.jpg")  # a symlink inside that points outside
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and args else None)
    rows = [
        {"path": p, "true": "cats", "predicted": "dogs", "probabilities": {"cats": 0.1, "dogs": 0.9}}
        for p in [inside, *escapes]
    ]
    png = worst_grid(rows, str(data))
    assert png and png.startswith(b"\x89PNG")
    assert any(p.endswith(inside.split("/")[-1]) for p in opened)  # the inside image was drawn
    assert not any(os.path.realpath(p) == str(secret.resolve()) for p in opened if p)
    assert path_inside(str(data), inside) and not any(path_inside(str(data), p) for p in escapes)


def test_links_out_of_the_data_folder_are_not_followed(tmp_path, secret):
    """A handed image folder cannot pull this machine's files into feature files: linked split, class and
    sub-folders are not entered, linked files that resolve outside are quarantined; --follow-links
    (for folders you built yourself) follows them."""
    from bneck.core.errors import DatasetError
    from bneck.features import extract, read_features
    from tests.conftest import MOBILENET

    private = tmp_path / "private"
    (private / "deep").mkdir(parents=True)
    shutil.copy(DATA / "train" / "cats" / "cat.500.jpg", private / "photo.jpg")
    shutil.copy(DATA / "train" / "dogs" / "dog.500.jpg", private / "deep" / "other.jpg")
    data = copy_subset(tmp_path / "data", 2, splits=("train", "validation"))
    for split in ("train", "validation"):
        os.symlink(private, data / split / "private")  # a class folder that is a link
    os.symlink(private / "deep", data / "train" / "cats" / "more")  # a linked sub-folder
    os.symlink(private / "photo.jpg", data / "train" / "dogs" / "innocent.jpg")  # a linked file, outside
    os.symlink(
        data / "train" / "cats" / sorted(os.listdir(data / "train" / "cats"))[0], data / "train" / "dogs" / "inside.jpg"
    )  # a link inside the data folder: fine
    report = extract(data, tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
    f = read_features(str(tmp_path / "out" / "train.h5"))
    assert f.class_names == ["cats", "dogs"] and "train/dogs/inside.jpg" in f.paths
    assert not any(p.startswith("train/private") or "more/" in p or p.endswith("innocent.jpg") for p in f.paths)
    private_shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in private.rglob("*.jpg")}
    assert not private_shas & set(f.sha256)
    reasons = dict(report.splits[0].quarantine)
    assert "not followed" in reasons["train/private"] and "not followed" in reasons["train/cats/more"]
    assert "outside the data folder" in reasons["train/dogs/innocent.jpg"]
    followed = extract(
        data, tmp_path / "followed", cache_dir=tmp_path / "cache", follow_links=True, verbose=False, **MOBILENET
    )
    g = read_features(str(tmp_path / "followed" / "train.h5"))
    assert g.class_names == ["cats", "dogs", "private"] and private_shas <= set(g.sha256)
    assert followed.splits[0].quarantined == 0
    linked_split = tmp_path / "data2"
    linked_split.mkdir()
    os.symlink(data / "train", linked_split / "train")
    with pytest.raises(DatasetError, match="symbolic link to a folder.*--follow-links"):
        extract(linked_split, tmp_path / "o3", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
