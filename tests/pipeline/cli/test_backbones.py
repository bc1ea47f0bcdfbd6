"""`bneck backbones --json` and `--measure`: what helps choosing, in a form scripts read."""

from __future__ import annotations

import json

import pytest

from bneck.features.backbones.registry import BACKBONES
from bneck.pipeline.cli import main


@pytest.mark.pure
def test_json_has_one_object_per_backbone_with_the_figures_that_help_choosing(capsys, tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    (home / "models" / BACKBONES["convnexttiny"].weights_file(None, 224)).write_bytes(b"weights")
    monkeypatch.setenv("KERAS_HOME", str(home))
    assert main(["backbones", "--json"]) == 0
    listed = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(BACKBONES) and len(listed) >= 40
    tiny = listed["convnexttiny"]
    assert tiny["imagenet_top1"] == pytest.approx(0.813) and tiny["weights_here"] is True
    assert 27e6 < tiny["parameters"] < 29e6  # Keras publishes 28.6M with the classifier (0.77M)
    assert tiny["multiply_adds"] == BACKBONES["convnexttiny"].multiply_adds > 4e9
    assert listed["vgg16"]["weights_here"] is False and listed["vgg16"]["default_size"] == 150
    # VGG16's cost at its default 150 px: Keras' 15.35 G at 224 px, scaled by the positions
    assert listed["vgg16"]["multiply_adds"] == pytest.approx(15.35e9 * (150 / 224) ** 2, rel=0.01)
    assert all(item["imagenet_top1"] and 0.6 < item["imagenet_top1"] < 0.9 for item in listed.values())


@pytest.mark.pure
def test_measure_gives_images_per_second_per_runtime(capsys):
    assert main(["backbones", "--measure", "mobilenetv3small", "--runtime", "tensorflow", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["name"] == "mobilenetv3small" and result["runtime"] == "tensorflow"
    assert result["images_per_second"] > 1 and result["why_not"] == ""


@pytest.mark.extra("openvino")
def test_measure_checks_another_runtime_against_tensorflow_first_then_measures_it(capsys):
    assert main(["backbones", "--measure", "mobilenetv3small", "--runtime", "openvino", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["runtime"] == "openvino" and result["why_not"] == "" and result["images_per_second"] > 1


@pytest.mark.pure
@pytest.mark.parametrize(
    "args, named",
    [(["--measure", "mobilenetv9"], "mobilenetv9"), (["--measure", "vgg16", "--runtime", "onnx"], "onnx")],
)
def test_measure_refuses_a_wrong_name_before_measuring(args, named, capsys):
    assert main(["backbones", *args]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
