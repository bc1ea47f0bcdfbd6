"""Names users choose (class folders, file names) never change what bneck's outputs say (issue 27):
classes named like a fixed column of predictions.csv, or like a spreadsheet formula, or holding a line
break; files whose names forge a line of `bneck predict`'s output, or are not UTF-8."""

from __future__ import annotations

import csv
import io
import os
import shutil

import pytest

from bneck.core.csvcells import FORMULA_STARTS, read_cell
from bneck.features import extract
from bneck.pipeline.cli import main
from bneck.pipeline.predictions_csv import read_predictions
from bneck.pipeline.training.stage import train
from tests.generated import make_images

CLASS_SETS = [("true", "false", "=cmd|' '"), ("split", "path", "a\nb"), ("predicted", "@x", "'quoted")]
FORGER = "a.jpg: dogs  cats=0.0000  dogs=1.0000\nzzz.jpg"


def _model(tmp_path, tiny, classes):
    data = make_images(tmp_path / "data", 4, classes=classes)
    extract(str(data), str(tmp_path / "feats"), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    train(str(tmp_path / "feats"), ["logreg"], str(tmp_path / "models"))
    return data, tmp_path / "models" / "logreg"


def _no_formula(cells):
    return all(not cell or cell[0] not in FORMULA_STARTS for cell in cells)


def _inputs(tmp_path, data):
    """Three images to predict: one named to forge a line, one with a name that is not UTF-8, one plain."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    first = sorted((data / "test").rglob("*.jpg"))[0]
    shutil.copy(first, folder / FORGER)
    shutil.copy(first, os.path.join(os.fsencode(folder), b"img\xff.jpg"))
    shutil.copy(first, folder / "plain.jpg")
    return folder


@pytest.mark.parametrize("classes", CLASS_SETS, ids=["true-false-formula", "split-path-newline", "predicted-at-quote"])
def test_names_never_forge_lines_cells_or_columns(tmp_path, tiny, classes, capsys):
    data, model = _model(tmp_path, tiny, classes)
    text = (model / "predictions.csv").read_text(encoding="utf-8", errors="surrogateescape")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert all(_no_formula(r) for r in records)  # no cell a spreadsheet runs
    rows = read_predictions(text)  # bneck reads its own file, whatever the classes are called
    assert {r["true"] for r in rows} == set(classes) and all(set(r["probabilities"]) == set(classes) for r in rows)

    inputs, out = _inputs(tmp_path, data), tmp_path / "p.csv"
    capsys.readouterr()
    for _ in range(2):  # the second run replaces its own CSV (a class name with a line break included)
        capsys.readouterr()
        assert main(["predict", str(model), str(inputs), "--csv", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("3 of 3 image(s) classified")  # one line per image
    assert sum(repr(FORGER)[1:-1] in line for line in lines) == 1 and not any(line.startswith("zzz") for line in lines)
    assert sum("img\\udcff.jpg'" in line for line in lines) == 1
    written = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8", "surrogateescape"), newline="")))
    assert all(_no_formula(r) for r in written)
    assert [read_cell(c) for c in written[0][2:-3]] == sorted(classes)
    names = {os.path.basename(read_cell(r[0])) for r in written[1:]}
    assert names == {FORGER, "img\udcff.jpg", "plain.jpg"}
