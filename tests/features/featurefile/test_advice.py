"""Advice never tells a user to delete what bneck did not make (issue 27)."""

from __future__ import annotations

import pytest

from bneck.features import extract
from bneck.pipeline.cli import main


def _own_files(tmp_path):
    """Files of the user's own: a photo, a config, a model file, an HDF5 file named train.h5 elsewhere."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not much of a photo")
    (tmp_path / "mine" / "config.toml").write_text('data = "x"\n')
    (tmp_path / "mine" / "model.keras").write_bytes(b"PK\x03\x04")
    (tmp_path / "mine" / "train.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    return sorted((tmp_path / "mine").iterdir())


@pytest.mark.parametrize("command", ["cache info", "evaluate"])
def test_a_users_own_file_is_never_to_be_deleted(tmp_path, tiny, tiny_data, command, capsys):
    extract(str(tiny_data), str(tmp_path / "feats"), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    from bneck.pipeline.training.stage import train

    train(str(tmp_path / "feats"), ["logreg"], str(tmp_path / "models"), verbose=False)
    for path in _own_files(tmp_path):
        args = (
            ["cache", "info", str(path)]
            if command == "cache info"
            else ["evaluate", str(tmp_path / "models" / "logreg"), str(path)]
        )
        capsys.readouterr()
        assert main(args) == 2, path
        err = capsys.readouterr().err
        assert "Delete" not in err and "left as it is" in err, (path, err)


def test_a_damaged_file_bneck_wrote_is_to_be_rebuilt(tmp_path, tiny, tiny_data, capsys):
    extract(str(tiny_data), str(tmp_path / "feats"), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    path = tmp_path / "feats" / "validation.h5"
    path.write_bytes(path.read_bytes()[:2000])
    assert main(["cache", "info", str(path)]) == 2
    assert f"Delete {path} and run `bneck extract` again" in capsys.readouterr().err
