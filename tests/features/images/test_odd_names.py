"""Folder and file names that are not UTF-8, or that are split names (issue 27): said as what they are."""

from __future__ import annotations

import os
import shutil

import pytest

from bneck.core.errors import DatasetError
from bneck.features.images.dataset import discover
from tests.generated import make_images


@pytest.mark.pure
@pytest.mark.parametrize("layout", ["splits", "single-root"])
def test_a_class_folder_whose_name_is_not_utf8_is_named_as_such(tmp_path, layout):
    data = make_images(tmp_path / "data", 2, splits=("train", "validation") if layout == "splits" else ("x",))
    if layout == "single-root":
        data = data / "x"
    for split in ["train", "validation"] if layout == "splits" else [""]:
        os.rename(os.path.join(data, split, "dogs"), os.path.join(os.fsencode(data / split), b"caf\xe9"))
    with pytest.raises(DatasetError, match=r"caf\\xe9' has a name that is not valid UTF-8.*Rename it"):
        discover(str(data))


@pytest.mark.pure
def test_a_class_of_undecodable_file_names_says_so_not_symbolic_links(tmp_path):
    data = make_images(tmp_path / "data", 2, splits=("train", "validation"))
    for split in ("train", "validation"):
        folder = data / split / "dogs"
        for name in os.listdir(folder):
            os.rename(folder / name, os.path.join(os.fsencode(folder), b"\xff" + name.encode()))
    with pytest.raises(DatasetError) as err:
        discover(str(data))
    said = str(err.value)
    assert "dogs hold no images" in said and "file name is not valid UTF-8" in said and "symbolic link" not in said


@pytest.mark.pure
@pytest.mark.parametrize("name", ["train", "validation", "test"])
def test_a_class_named_like_a_split_in_one_folder_per_class_is_said_so(tmp_path, name):
    data = make_images(tmp_path / "d", 4, splits=("root",), classes=("cats", name))
    with pytest.raises(DatasetError, match=rf"one of its classes is named '{name}', a name bneck reserves"):
        discover(str(data / "root"))
    shutil.rmtree(data / "root" / name)  # without it, the folder is an ordinary one-folder-per-class set
    make_images(tmp_path / "d", 4, splits=("root",), classes=("dogs",))
    assert discover(str(data / "root")).class_names == ["cats", "dogs"]


@pytest.mark.pure
def test_a_utf8_class_name_read_through_an_ascii_locale_says_the_locale(tmp_path):
    """Issue 27: under LC_ALL=C PYTHONUTF8=0 a valid UTF-8 name was called "not valid UTF-8" (rename it)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    data = make_images(tmp_path / "data", 2, splits=("train", "validation"), classes=("chät", "dogs"))
    code = "from bneck.features.images.dataset import discover; import sys; discover(sys.argv[1])"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    done = subprocess.run(
        [sys.executable, "-c", code, str(data)],
        env=dict(env, LC_ALL="C", PYTHONUTF8="0", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert "has a UTF-8 name, but this Python reads file names as ascii" in done.stderr, done.stderr[-2000:]
    assert "not valid UTF-8" not in done.stderr
