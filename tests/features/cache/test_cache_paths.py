"""A cache path that cannot be a folder (issue 27): a loop of symbolic links, a path through a regular
file - one paragraph before any work, from the flag and from $BNECK_CACHE, and no --out left behind."""

from __future__ import annotations

import os

import pytest

from bneck.pipeline.cli import main
from tests.generated import cli_args


def _loop(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    return tmp_path / "loop"


def _under_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "cache"


def _deeper_under_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "a" / "b"


def _through_loop(tmp_path):
    return _loop(tmp_path) / "sub"


BAD = {"loop": _loop, "under-a-file": _under_file, "deeper": _deeper_under_file, "through-a-loop": _through_loop}


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("bad", sorted(BAD))
def test_a_cache_path_that_cannot_be_a_folder_is_refused_before_work(tmp_path, tiny, tiny_data, bad, how, capsys):
    cache = BAD[bad](tmp_path)
    out = tmp_path / "out"
    args = ["extract", str(tiny_data), "--out", str(out), *cli_args(tiny)]
    if how == "flag":
        args += ["--cache-dir", str(cache)]
    else:
        os.environ["BNECK_CACHE"] = str(cache)  # the autouse fixture restores it
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot be a cache folder" in err and str(cache) in err and "Traceback" not in err
    assert not out.exists()
