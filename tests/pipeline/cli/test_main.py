"""The command line: exit codes, messages, the summary table and the cache commands (pure)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import h5py
import pytest

from bneck.pipeline.cli import main
from tests.conftest import ROOT
from tests.generated import cli_args

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def tiny_args(tiny) -> list[str]:
    """The tiny backbone as `bneck extract` options."""
    return cli_args(tiny)


def test_extract_prints_the_summary_and_reruns_from_cache(tiny_data, tmp_path, capsys, tiny_args):
    out = str(tmp_path / "out")
    assert main(["extract", str(tiny_data), "--out", out, "--quiet", *tiny_args]) == 0
    text = capsys.readouterr().out
    for column in ("split", "images", "classes", "quarantined", "reused", "computed", "seconds", "file"):
        assert column in text
    assert "network ran on 36 image(s)" in text
    # what else this CPU computes natively, said after an fp32 run exactly when there is something to say
    from bneck.features.runtimes.cpu import precision_hint

    hint = precision_hint()
    assert (hint in text.splitlines()) if hint else ("this CPU also computes" not in text)
    assert main(["extract", str(tiny_data), "--out", out, "--quiet", *tiny_args]) == 0
    assert "network ran on 0 image(s)" in capsys.readouterr().out


def test_quarantine_is_listed(tiny_data, tmp_path, capsys, tiny_args):
    (tiny_data / "test" / "dogs" / "broken.jpg").write_bytes(b"not an image")
    assert (
        main(["extract", str(tiny_data), "--out", str(tmp_path / "o"), "--quiet", "--splits", "test", *tiny_args]) == 0
    )
    assert "test: test/dogs/broken.jpg: not a recognised image" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["extract", "{tmp}/missing", "--out", "{tmp}/o"], "data folder not found"),
        (
            ["extract", "{data}", "--out", "{tmp}/o", "--backbone", "mobilenet", "--alpha", "0.3"],
            "alpha for mobilenet must be one of",
        ),
        (["extract", "{data}", "--out", "{tmp}/o", "--weights", "{tmp}/nope.h5"], "no file exists"),
        (["extract", "{data}", "--out", "{tmp}/o", "--split", "0.5,0.25,0.25"], "--split applies to a single-root"),
        (["extract", "{data}", "--out", "{tmp}/o", "--split", "0.5,0.5,0.5"], "--split must be three"),
        (["extract", "{data}", "--out", "{tmp}/o", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (
            ["extract", "{data}", "--out", "{tmp}/o", "--pool", "sum"],
            "--pool must be one of 'none', 'avg', 'max'. Received: pool='sum'",
        ),
        (["cache", "info", "zzzz"], "matches 0 cache entries"),
    ],
)
def test_user_errors_exit_2_with_one_paragraph(tiny_data, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, data=tiny_data) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_argparse_mistakes_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "x", "--out", "y", "--batch-size", "two"])
    assert exit_info.value.code == 2
    assert "--batch-size: must be an integer >= 1 and <= 4096; received 'two'" in capsys.readouterr().err


def test_cache_ls_info_gc(tiny_data, tmp_path, capsys, isolated_cache, tiny_args):
    out = tmp_path / "out"
    main(["extract", str(tiny_data), "--out", str(out), "--quiet", *tiny_args])
    capsys.readouterr()
    assert main(["cache", "ls"]) == 0
    listing = capsys.readouterr().out
    assert "mobilenet" in listing and "conv_pw_13_relu" in listing and " 36 " in listing
    assert listing.splitlines()[2].split()[1] == "features"  # what the entry holds
    # an entry a failed run left without rows is hidden, and said so; --all shows it as empty
    first = next((isolated_cache / "features").iterdir())
    empty = first.parent / ("0" * len(first.name))
    empty.mkdir()
    (empty / "meta.json").write_bytes((first / "meta.json").read_bytes())
    assert main(["cache", "ls"]) == 0
    said = capsys.readouterr().out
    assert "0" * 12 not in said and "1 empty entry" in said and "--all lists them" in said
    assert main(["cache", "ls", "--all"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("0" * 12))
    assert row.split()[1] == "empty"
    shutil.rmtree(empty)
    assert main(["cache", "info", str(out / "train.h5")]) == 0
    assert '"extractor_key"' in capsys.readouterr().out
    key_dir = next((isolated_cache / "features").iterdir())
    assert main(["cache", "info", key_dir.name[:10]]) == 0
    assert '"rows": 36' in capsys.readouterr().out

    chunks = sorted(key_dir.glob("rows-*.h5"))
    assert len(chunks) == 3  # one per split
    stale = key_dir / ".rows-x.h5.tmp-999999-0123abcd"
    stale.write_bytes(b"partial")
    with h5py.File(chunks[0], "r+") as f:  # a silently flipped value in one chunk
        f["features"][0, 0, 0, 0] += 1.0
    assert main(["cache", "gc"]) == 0
    said = capsys.readouterr().out
    assert "1 stale temporary" in said and "1 damaged chunk" in said and "merged 2 chunk" in said
    assert not stale.exists() and len(list(key_dir.glob("rows-*.h5"))) == 1
    # the dropped rows are recomputed, the merged ones reused
    assert main(["extract", str(tiny_data), "--out", str(out), "--quiet", *tiny_args]) == 0
    assert "network ran on 12 image(s)" in capsys.readouterr().out


def test_gc_older_than_removes_unused_entries(tiny_data, tmp_path, capsys, isolated_cache, tiny_args):
    main(["extract", str(tiny_data), "--out", str(tmp_path / "o"), "--quiet", "--splits", "test", *tiny_args])
    meta = next((isolated_cache / "features").iterdir()) / "meta.json"
    os.utime(meta, (0, 0))
    assert main(["cache", "gc", "--older-than", "30"]) == 0
    assert "1 unused entr" in capsys.readouterr().out
    # the rows and meta are gone; the lock files stay (processes may be waiting on them)
    assert sorted(p.name for p in meta.parent.iterdir()) == [".inuse", ".lock"]
    assert main(["cache", "ls"]) == 0 and "no cached features" in capsys.readouterr().out


def test_python_dash_m_pipeline_and_console_script_exist(tmp_path):
    for cmd in ([sys.executable, "-m", "bneck"], [os.path.join(os.path.dirname(sys.executable), "bneck")]):
        result = subprocess.run(
            [*cmd, "extract", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2
        assert "data folder not found" in result.stderr and "Traceback" not in result.stderr


def test_a_reader_that_leaves_gets_no_traceback():
    """`bneck ... | head`: the pipe's reader is gone before the output is written (here: closed at once)."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "bneck", "backbones", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # nobody reads: every write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_reader_that_leaves_costs_no_predictions_csv(tmp_path, tiny, tiny_data):
    """`bneck predict ... --csv F | true` lost F (issue 27): the file is written before the lines."""
    import subprocess
    import sys

    from bneck.features import extract
    from bneck.pipeline.training.stage import train

    extract(str(tiny_data), str(tmp_path / "f"), cache_dir=str(tmp_path / "c"), verbose=False, **tiny)
    train(str(tmp_path / "f"), ["logreg"], str(tmp_path / "m"), verbose=False)
    csv_file = tmp_path / "p.csv"
    command = [sys.executable, "-m", "bneck", "predict", str(tmp_path / "m" / "logreg"), str(tiny_data / "test")]
    proc = subprocess.Popen(
        [*command, "--csv", str(csv_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err, err
    assert len(csv_file.read_text().splitlines()) == 1 + 12  # the header and every test image
