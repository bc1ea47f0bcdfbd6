"""What bneck tells before any work: --version, backbones, layers, init, and 'did you mean'."""

from __future__ import annotations

from importlib import metadata

import pytest

from bneck.features.backbones.registry import BACKBONES
from bneck.features.runtimes.cpu import signature
from bneck.pipeline.cli import main
from bneck.pipeline.runner.config import DEFAULTS, load_config


@pytest.mark.pure
def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"bneck {metadata.version('bneck')}"


# Not pure: it checks the imagenet lookup in $KERAS_HOME, which holds the real weights file from ../shared.
def test_backbones_lists_every_entry_the_weights_found_here_and_this_cpu(capsys, keras_home):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in BACKBONES}
    assert set(rows) == set(BACKBONES)
    for name, backbone in BACKBONES.items():
        assert backbone.default_layer in rows[name] and backbone.unfreeze_from in rows[name]
    present = sorted(p.name for p in (keras_home / "models").iterdir())
    # the session's Keras home holds exactly MobileNet 0.25's file: that alpha, and only it, is present
    assert rows["mobilenet"].rstrip().endswith("alpha 0.25") == (present == ["mobilenet_2_5_224_tf_no_top.h5"])
    assert rows["vgg16"].rstrip().endswith("no")
    assert signature() in out and "native bf16" in out


@pytest.mark.pure
def test_layers_lists_the_architecture_with_its_marks(capsys):
    import keras

    assert main(["layers", "mobilenet", "--alpha", "0.25", "--size", "128"]) == 0
    out = capsys.readouterr().out
    expected = keras.applications.MobileNet(include_top=False, weights=None, alpha=0.25, input_shape=(128, 128, 3))
    names = [layer.name for layer in expected.layers]
    table = [
        line for line in out.splitlines() if line.split() and line.split()[0].isdigit() and " layers in " not in line
    ]
    listed = [line.split()[1] for line in table]
    assert listed == [n if i else "input_layer" for i, n in enumerate(names)]
    line = {row.split()[1]: row for row in table}
    assert line["conv_pw_13_relu"].rstrip().endswith("default --layer") and "(4, 4, 256)" in line["conv_pw_13_relu"]
    assert line["conv_pad_6"].rstrip().endswith("default --unfreeze-from")
    assert line["conv_dw_13"].rstrip().endswith("--unfreeze-from last-block")
    assert f"{len(names)} layers in mobilenet alpha 0.25 at 128 px" in out


@pytest.mark.pure
@pytest.mark.parametrize(
    "argv,said",
    [
        (["layers", "mobilenet_v2"], "Did you mean 'mobilenetv2'?"),
        (["layers", "MobileNet", "--alpha", "0.3"], "alpha for mobilenet must be one of"),
        (["layers", "vgg16", "--size", "9"], "input size for vgg16 must be an integer from 32"),
        (["train", "F", "--classifier", "logistic", "--out", "M"], "Did you mean 'logreg'?"),
        (["train", "F", "--classifier", "gap_dense", "--out", "M"], "Did you mean 'gap-dense'?"),
    ],
)
def test_mistyped_names_are_refused_with_the_closest_allowed_one(argv, said, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.pure
def test_init_writes_a_template_that_loads_to_the_defaults_and_never_overwrites(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-weights"))  # no weights here, offline: the defaults
    monkeypatch.setenv("BNECK_OFFLINE", "1")
    path = tmp_path / "exp.toml"
    assert main(["init", str(path), "--data", str(tmp_path / "images")]) == 0
    text = path.read_text()
    config = load_config(str(path))
    expected = {**DEFAULTS, "data": str(tmp_path / "images"), "out": str(tmp_path / "runs" / "run")}
    assert {k: v for k, v in config.items() if k not in ("data", "out")} == {
        k: v for k, v in expected.items() if k not in ("data", "out")
    }
    assert config["data"] == expected["data"] and config["out"] == expected["out"]
    for stage, table in DEFAULTS.items():  # every key is there, with a comment saying what it does
        if isinstance(table, dict):
            assert f"[{stage}]" in text
    assert text.count("\n# ") >= sum(len(t) for t in DEFAULTS.values() if isinstance(t, dict))
    before = path.read_bytes()
    assert main(["init", str(path)]) == 2
    assert "never overwrites" in capsys.readouterr().err and path.read_bytes() == before


@pytest.mark.pure
@pytest.mark.parametrize(
    "line,expected",
    [("bneck exp", {"export"}), ("bneck ba", {"backbones"}), ("bneck export m --format o", {"onnx", "openvino"})],
)
def test_shell_completion_offers_commands_and_choices(tmp_path, line, expected):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_IFS": "\n",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "bneck")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert {w.strip() for w in out.read_text().split("\n") if w.strip()} == expected


def _commands(parser, path=""):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}".strip(), sub
                yield from _commands(sub, f"{path} {name}")


@pytest.mark.pure
def test_every_command_has_a_description_an_example_and_help_for_every_argument():
    import argparse

    from bneck.pipeline.cli import build_parser

    commands = dict(_commands(build_parser()))
    assert {
        "extract",
        "train",
        "predict",
        "finetune",
        "run",
        "export",
        "backbones",
        "layers",
        "init",
        "cache ls",
    } <= set(commands)
    for name, sub in commands.items():
        assert sub.description, name
        assert "example" in (sub.epilog or "") and "bneck " in sub.epilog, name
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):  # its commands are checked themselves
                assert action.help, (name, action.dest)
        sub.format_help()  # renders (a %-placeholder in a help line would raise here)


@pytest.mark.pure
def test_init_records_paths_as_given_from_here_whatever_folder_the_config_lands_in(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    assert main(["init", "deep/er/c.toml", "--data", "images", "--out", "runs/x"]) == 0
    config = load_config(str(tmp_path / "deep" / "er" / "c.toml"))
    assert config["data"] == str(tmp_path / "images") and config["out"] == str(tmp_path / "runs" / "x")
    for bad, said in (("/proc/c.toml", "cannot be written"), ("afile/c.toml", "is not a folder")):
        (tmp_path / "afile").write_text("x")
        assert main(["init", bad]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err


@pytest.mark.parametrize("here", ["three files", "the default's file", "none"])
def test_init_offline_picks_the_strongest_backbone_whose_weights_are_here(tmp_path, monkeypatch, capsys, here):
    from bneck.features.backbones.weights_store import add_weights
    from tests.conftest import SHARED

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("BNECK_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("BNECK_OFFLINE", "1")
    if here == "three files":
        add_weights([str(SHARED / "data" / "weights")])
    elif here == "the default's file":  # found by name: then the default stays whatever else is here
        (tmp_path / "keras" / "models").mkdir(parents=True)
        (tmp_path / "keras" / "models" / BACKBONES["vgg16"].weights_file(None, 150)).write_bytes(b"x")
    assert main(["init", str(tmp_path / "c.toml"), "--data", str(tmp_path / "images")]) == 0
    said = capsys.readouterr().out
    extract = load_config(str(tmp_path / "c.toml"))["extract"]
    chosen = (extract["backbone"], extract["alpha"], extract["size"])
    if here == "three files":
        assert chosen == ("mobilenetv2", 0.5, 224)
        assert "the strongest (ImageNet top-1 65.4%)" in said and "offline" in said
        assert "# backbone: mobilenetv2, alpha 0.5, the strongest" in (tmp_path / "c.toml").read_text()
    else:
        assert chosen == (DEFAULTS["extract"]["backbone"], None, None)
        assert ("on this machine" if here == "the default's file" else "bneck weights add FILE") in said


@pytest.mark.pure
def test_init_online_keeps_the_default_backbone(monkeypatch, tmp_path):
    from bneck.pipeline.runner.config import starting_backbone

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    values, why = starting_backbone(online=True)
    assert values == {} and "downloaded on first use" in why[0]
