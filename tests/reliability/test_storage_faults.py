"""A full disk, a file size limit, a read-only folder: a clear error, and nothing earlier lost."""

from __future__ import annotations

import os

from bneck.features import extract
from bneck.pipeline import train
from tests.conftest import MOBILENET, copy_subset
from tests.reliability.conftest import MOBILENET_ARGS, snapshot, temporaries


def _extract_args(tmp_path, out="out"):
    return [
        "extract",
        tmp_path / "data",
        "--out",
        tmp_path / out,
        "--cache-dir",
        tmp_path / "cache",
        "--quiet",
        *MOBILENET_ARGS,
    ]


def _clear(output: str, reason: str) -> None:
    assert "could not write" in output and reason in output, output[-2000:]
    assert "could not write a file:" not in output  # the file, or the folders written, are named
    assert "files and cache entries written before are intact" in output
    assert "Traceback" not in output


def test_disk_full_while_extracting_keeps_the_cache_and_the_files(tmp_path, bneck):
    copy_subset(tmp_path / "data", 3, splits=("train",))
    extract(tmp_path / "data", tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
    before = snapshot(tmp_path / "out", tmp_path / "cache")
    copy_subset(tmp_path / "data", 3, splits=("train",), offset=3)  # new rows to store
    full = bneck(tmp_path, _extract_args(tmp_path), fsize=30_000)  # a 50 kB chunk will not fit
    assert full.returncode == 2
    _clear(full.output, "File too large")
    assert snapshot(tmp_path / "out", tmp_path / "cache") == before
    assert not temporaries(tmp_path / "out", tmp_path / "cache")
    again = extract(tmp_path / "data", tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
    assert again.forward_images == 6 and again.splits[0].reused == 6


def test_disk_full_while_training_keeps_the_trained_classifiers(tmp_path, bneck):
    copy_subset(tmp_path / "data", 4)
    extract(tmp_path / "data", tmp_path / "features", verbose=False, **MOBILENET)
    train(tmp_path / "features", ["logreg"], tmp_path / "models", verbose=False)
    before = snapshot(tmp_path / "models")
    full = bneck(
        tmp_path,
        [
            "train",
            tmp_path / "features",
            "--classifier",
            "logreg,dense",
            "--out",
            tmp_path / "models",
            "--pca",
            "4",
            "--epochs",
            "2",
            "--quiet",
        ],
        fsize=2_000,
    )
    assert full.returncode == 2
    _clear(full.output, "File too large")
    assert snapshot(tmp_path / "models") == before  # logreg as it was, no dense
    assert not temporaries(tmp_path / "models")


def test_read_only_output_folder_is_a_clear_error(tmp_path, bneck):
    copy_subset(tmp_path / "data", 2, splits=("train",))
    extract(tmp_path / "data", tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
    before = snapshot(tmp_path / "cache")
    (tmp_path / "locked").mkdir(mode=0o555)
    os.chmod(tmp_path / "locked", 0o555)
    done = bneck(tmp_path, _extract_args(tmp_path, out="locked"), honour_permissions=True)
    assert done.returncode == 2
    _clear(done.output, "Permission denied")
    assert "Choose a folder you can write to" in done.output
    assert snapshot(tmp_path / "cache") == before and not list((tmp_path / "locked").iterdir())


def get_format_missing(name: str) -> tuple:
    from bneck.pipeline.export.formats.registry import _FORMATS

    return _FORMATS[name].missing()


def test_export_under_a_file_size_limit_is_one_paragraph_for_every_format(tmp_path, bneck, tiny, tiny_data):
    """savedmodel and tflite ended in TensorFlow's OutOfRangeError traceback ('File too large' in words
    only): every installed format is one paragraph naming --out, and leaves nothing behind."""
    from bneck.pipeline.export.formats import list_formats

    extract(str(tiny_data), str(tmp_path / "features"), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    train(str(tmp_path / "features"), ["logreg"], str(tmp_path / "models"), verbose=False)
    formats = [name for name in list_formats() if not get_format_missing(name)]
    assert {"keras", "savedmodel"} <= set(formats)
    for name in formats:
        out = tmp_path / f"export-{name}"
        done = bneck(tmp_path, ["export", tmp_path / "models" / "logreg", "--format", name, "--out", out], fsize=2_000)
        assert done.returncode == 2, (name, done.output[-2000:])
        _clear(done.output, "File too large")
        assert str(out) in done.output and not out.exists() and not temporaries(tmp_path)


def test_a_refused_write_without_a_file_name_names_the_folders_written():
    """HDF5 and TensorFlow say "File too large" without a file name: the paragraph names --out and the cache."""
    import argparse
    import errno

    from bneck.pipeline.cli import _written_path

    exc = RuntimeError(f"Can't write data (file write failed: errno = {errno.EFBIG})")
    args = argparse.Namespace(out="/x/out", cache_dir="/x/cache")
    assert _written_path(exc, args) == "a file under /x/out or /x/cache"
    assert _written_path(OSError(errno.EFBIG, "File too large", "/x/out/a.h5"), args) == "/x/out/a.h5"
    assert "a file" in _written_path(exc, argparse.Namespace()) and "folder" in _written_path(exc, argparse.Namespace())


def test_a_name_longer_than_the_file_system_takes_is_one_paragraph(tmp_path, tiny, tiny_data, capsys):
    """A path part over 255 bytes was an OSError traceback in train, extract, predict --csv and export."""
    from bneck.pipeline.cli import main
    from tests.generated import cli_args

    extract(str(tiny_data), str(tmp_path / "f"), cache_dir=str(tmp_path / "c"), verbose=False, **tiny)
    train(str(tmp_path / "f"), ["logreg"], str(tmp_path / "m"), verbose=False)
    long = str(tmp_path / ("x" * 300))
    for args in (
        ["train", str(tmp_path / "f"), "--classifier", "logreg", "--out", long],
        ["extract", str(tiny_data), "--out", long, "--cache-dir", str(tmp_path / "c"), *cli_args(tiny)],
        ["predict", str(tmp_path / "m" / "logreg"), str(tiny_data / "test"), "--csv", long + ".csv"],
        ["export", str(tmp_path / "m" / "logreg"), "--out", long],
    ):
        capsys.readouterr()
        assert main(args) == 2, args[0]
        err = capsys.readouterr().err
        assert "File name too long" in err and "Choose a shorter path" in err and "Traceback" not in err, err
