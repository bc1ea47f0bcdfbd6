"""int8 extraction: own key, calibration on training images only, the cosine gate, reuse.

A missing nncf: tests/features/test_runtime_openvino.py."""
from __future__ import annotations

import json
import os
import sys

import h5py
import numpy as np
import pytest

from features import extract, read_features
from features.errors import ConfigError
from features.quantize import QuantizationRefused, cosine_per_row, plan_calibration
from features.runtime_openvino import converted_path
from tests.conftest import MOBILENET, copy_subset

INT8 = dict(MOBILENET, runtime="openvino", precision="int8", calibration_images=8)
_OPENED: list = []  # (kind, path) events while a test listens; the hook stays installed, idle
_LISTENING = [False]


def _audit(event, args):
    if not _LISTENING[0]:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(("open", os.fsdecode(args[0])))
    elif event == "os.rename":
        _OPENED.append(("rename", os.fsdecode(args[1])))


sys.addaudithook(_audit)


def _images(folder) -> set[str]:
    return {os.path.join(d, n) for d, _, names in os.walk(folder) for n in names}


def test_int8_has_its_own_key_and_records_its_check_in_the_file(tmp_path):
    data = copy_subset(tmp_path / "data", 8, splits=("train", "test"))
    fp32 = extract(data, tmp_path / "fp32", runtime="openvino", verbose=False, **MOBILENET)
    int8 = extract(data, tmp_path / "int8", force=True, verbose=False, **INT8)
    assert int8.spec.key != fp32.spec.key
    assert json.loads(int8.spec.quantization)["calibration_images"] == 8
    assert int8.forward_images == 32  # nothing reused from the fp32 rows
    with h5py.File(tmp_path / "int8" / "test.h5") as f:
        assert f.attrs["extractor_key"] == int8.spec.key and f.attrs["precision"] == "int8"
        check = json.loads(f.attrs["quantization_check"])
    assert check["check_images"] == 4 and check["calibration_images"] == 8
    # The recorded cosine is what the features themselves show (on other images here).
    a = read_features(str(tmp_path / "fp32" / "test.h5")).features
    b = read_features(str(tmp_path / "int8" / "test.h5")).features
    cosine = cosine_per_row(a, b)
    assert not np.allclose(a, b) and 0.5 < cosine.mean() < 1.0
    assert abs(cosine.mean() - check["cosine_mean"]) < 0.1


def test_calibration_reads_training_images_only(tmp_path):
    data = copy_subset(tmp_path / "data", 8)
    train, held_out = _images(data / "train"), _images(data / "validation") | _images(data / "test")
    _OPENED.clear()
    _LISTENING[0] = True
    try:  # extract validation and test only: training images are read for calibration alone
        report = extract(data, tmp_path / "out", splits=["validation", "test"], force=True,
                         verbose=False, **INT8)
    finally:
        _LISTENING[0] = False
    saved = next(i for i, (kind, path) in enumerate(_OPENED)
                 if kind == "rename" and path == converted_path(report.cache_dir, report.spec, "int8"))
    before = {path for kind, path in _OPENED[:saved] if kind == "open" and path in train | held_out}
    after = {path for kind, path in _OPENED[saved:] if kind == "open" and path in train | held_out}
    assert len(before) == 12 and before <= train  # 8 calibration + 4 check images, all training
    assert after == held_out  # then the two extracted splits, every image, and no training image
    assert report.quantization["check_images"] == 4


def test_cosine_gate_refuses_and_force_accepts_without_quantising_again(tmp_path):
    data = copy_subset(tmp_path / "data", 8, splits=("train",))
    with pytest.raises(QuantizationRefused) as refused:
        extract(data, tmp_path / "out", verbose=False, **INT8)
    message = str(refused.value)
    assert "cosine" in message and "--min-cosine 0.98" in message and "--force" in message
    assert "--precision fp32" in message
    assert not os.path.exists(tmp_path / "out" / "train.h5")  # refused before any row was made
    forced = extract(data, tmp_path / "out", force=True, verbose=False, **INT8)
    assert forced.quantized is False and forced.converted is False  # both came from the cache
    assert forced.quantization["forced"] is True and forced.quantization["passed"] is False
    lenient = extract(data, tmp_path / "out2", min_cosine=0.5, verbose=False, **INT8)
    assert lenient.quantization["passed"] is True and lenient.quantization["forced"] is False
    assert lenient.forward_images == 0  # same int8 key: the rows came from the cache


def test_calibration_plan_is_seeded_by_content_and_disjoint_from_the_check(tmp_path):
    data = copy_subset(tmp_path / "data", 10, splits=("train",))
    paths = sorted(_images(data / "train"))
    plan = plan_calibration(paths, 6, seed=3)
    assert len(plan.calibration) == 6 and len(plan.check) == 5  # a quarter of 20, held back
    assert not {s for s, _ in plan.calibration} & {s for s, _ in plan.check}
    assert plan_calibration(paths[::-1], 6, seed=3).key_json() == plan.key_json()
    assert plan_calibration(paths, 6, seed=4).key_json() != plan.key_json()


@pytest.mark.parametrize("options, expected", [
    (dict(precision="int16", runtime="openvino"), "--precision must be one of 'fp32', 'int8'"),
    (dict(precision="int8"), "--precision int8 runs on OpenVINO: add --runtime openvino"),
    (dict(precision="int8", runtime="openvino", calibration_images=0), "--calibration-images must be"),
    (dict(precision="int8", runtime="openvino", min_cosine=2.0), "--min-cosine must be a number"),
])
def test_int8_option_mistakes(tmp_path, options, expected):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    with pytest.raises(ConfigError, match=expected.replace("-", r"\-")):
        extract(data, tmp_path / "out", verbose=False, **dict(MOBILENET, **options))
