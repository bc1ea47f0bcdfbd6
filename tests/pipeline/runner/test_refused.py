"""A run refused before work leaves no folder, and every entry point's advice is in its own words."""

from __future__ import annotations

import pytest

import bneck
from bneck.pipeline.cli import main

pytestmark = pytest.mark.pure


@pytest.fixture
def offline_without_weights(tmp_path, monkeypatch):
    """No ImageNet file anywhere, and BNECK_OFFLINE set: `imagenet` for VGG16 is refused at once."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("BNECK_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("BNECK_OFFLINE", "1")


@pytest.mark.parametrize("earlier", [False, True])
def test_a_run_refused_in_its_first_stage_leaves_no_folder_and_names_config_keys(
    tiny_data, tmp_path, capsys, offline_without_weights, earlier
):
    out = tmp_path / "run"
    if earlier:  # a folder an earlier run made is this user's: it stays, whatever this run met
        out.mkdir()
        (out / ".bneck-folder.json").write_text('{"kind": "run", "bneck": "earlier"}')
    argv = ["run", "--data", str(tiny_data), "--out", str(out), "--set", 'extract.backbone="vgg16"']
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "BNECK_OFFLINE is set" in err
    assert '`weights = "PATH"` under [extract]' in err and '`weights = "none"` under [extract]' in err
    assert "--weights" not in err
    assert out.exists() == earlier


def test_the_api_names_keyword_arguments(tiny_data, tmp_path, offline_without_weights):
    with pytest.raises(bneck.WeightsError) as refused:
        bneck.extract(str(tiny_data), str(tmp_path / "features"), backbone="vgg16")
    said = str(refused.value)
    assert "weights=PATH" in said and 'weights="none"' in said and "--weights" not in said
    assert not (tmp_path / "features").exists()


def test_the_command_line_names_flags(tiny_data, tmp_path, capsys, offline_without_weights):
    assert main(["extract", str(tiny_data), "--out", str(tmp_path / "f"), "--backbone", "vgg16"]) == 2
    err = capsys.readouterr().err
    assert "--weights PATH" in err and "--weights none" in err


def test_a_run_refused_after_claiming_its_features_folder_leaves_no_folder_and_an_earlier_config_intact(
    tiny_data, tiny, tmp_path, capsys
):
    """A weights file that is not one: extraction claims features/ before loading it fails."""
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    common = ["run", "--data", str(tiny_data), "--set", 'extract.backbone="mobilenet"', "--set", "extract.alpha=0.25"]
    common += ["--set", f"extract.size={tiny['size']}"]
    out = tmp_path / "new"
    assert main([*common, "--out", str(out), "--set", f'extract.weights="{broken}"', "--quiet"]) == 2
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    earlier = tmp_path / "earlier"  # a finished run's folder: a refused rerun leaves its config as it was
    assert (
        main(
            [
                *common,
                "--out",
                str(earlier),
                "--set",
                f'extract.weights="{tiny["weights"]}"',
                "--set",
                'train.classifiers=["logreg"]',
                "--set",
                "finetune.enabled=false",
                "--quiet",
            ]
        )
        == 0
    )
    config = (earlier / "config.toml").read_bytes()
    assert main([*common, "--out", str(earlier), "--set", f'extract.weights="{broken}"', "--quiet"]) == 2
    assert (earlier / "config.toml").read_bytes() == config
    capsys.readouterr()
