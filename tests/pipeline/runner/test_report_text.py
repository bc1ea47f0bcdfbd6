"""What the report writes from names anyone may choose: Markdown shows them literally, commands paste."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest

from bneck.pipeline.runner.report import _md, _next_steps

pytestmark = pytest.mark.pure

HOSTILE = [
    "a|b",
    "<img src=x onerror=alert(1)>",
    "![x](http://evil.example/t.png)",
    "<b>bold",
    "`code`",
    "line\nbreak",
    "[link](http://evil.example)",
    "*em* _u_ #h",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_in_a_table_or_text_stays_one_cell_and_makes_no_link_image_or_tag(name):
    md = _md([("Per class", [("table", ["model", "class"], [["svm", name]]), ("text", f"in {name}")])], "/run")
    row = next(line for line in md.splitlines() if line.startswith("| svm"))
    unescaped_pipes = row.replace("\\|", "").count("|")
    assert unescaped_pipes == 3  # | svm | NAME |: two cells, whatever the name holds
    for line in md.splitlines():
        plain = line.replace("\\<", "").replace("\\[", "").replace("\\!", "")
        assert "<img" not in plain and "<b>" not in plain and "](http" not in plain.replace("\\]", "")
    assert "\nbreak" not in md


def test_the_next_commands_paste_into_a_shell_whatever_the_folders_are_named(tmp_path):
    folder = str(tmp_path / "run 1 (copy)" / "models" / "logreg")
    best = SimpleNamespace(name="logreg", folder=folder, kind="classifier")
    result = SimpleNamespace(leaderboard=[best], folder=str(tmp_path / "run 1 (copy)"))
    steps = [text for _, text in _next_steps(result)]
    predict = next(t for t in steps if "bneck predict" in t)
    export = next(t for t in steps if "bneck export" in t)
    assert shlex.split(predict.split(": ", 1)[1])[:3] == ["bneck", "predict", folder]
    words = shlex.split(export.split(": ", 1)[1].split(" (or ")[0])
    assert words[:3] == ["bneck", "export", folder] and words[words.index("--out") + 1].endswith("(copy)/export")
