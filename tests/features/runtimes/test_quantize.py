"""int8 extraction: own key, calibration on training images only, the cosine gate, reuse.

A missing nncf: tests/features/runtimes/test_openvino.py."""

from __future__ import annotations

import json
import os
import sys

import h5py
import numpy as np
import pytest

from bneck.core.errors import ConfigError
from bneck.features import extract, read_features
from bneck.features.runtimes.openvino import converted_path
from bneck.features.runtimes.quantize import QuantizationRefused, cosine_per_row, plan_calibration
from tests.conftest import MOBILENET, copy_subset

pytestmark = pytest.mark.extra("openvino")

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


def test_int8_has_its_own_key_and_records_its_check_in_the_file(tmp_path, capfd):
    data = copy_subset(tmp_path / "data", 8, splits=("train", "test"))
    fp32 = extract(data, tmp_path / "fp32", runtime="openvino", verbose=False, **MOBILENET)
    capfd.readouterr()
    int8 = extract(data, tmp_path / "int8", force=True, verbose=False, **INT8)
    said = capfd.readouterr()
    assert "Statistics collection" not in said.out + said.err  # quiet silences NNCF's own bars too
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
        report = extract(data, tmp_path / "out", splits=["validation", "test"], force=True, verbose=False, **INT8)
    finally:
        _LISTENING[0] = False
    saved = next(
        i
        for i, (kind, path) in enumerate(_OPENED)
        if kind == "rename" and path == converted_path(report.cache_dir, report.spec, "int8")
    )
    before = {path for kind, path in _OPENED[:saved] if kind == "open" and path in train | held_out}
    after = {path for kind, path in _OPENED[saved:] if kind == "open" and path in train | held_out}
    # 8 calibration + 4 check images and the 8 of the fp32 model's check against TensorFlow: all training
    assert 12 <= len(before) <= 20 and before <= train
    assert after - train == held_out  # then the two extracted splits, every image (and the int8 check's images)
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


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(precision="int16", runtime="openvino"), "--precision must be one of 'fp32', 'int8'"),
        (dict(precision="int8", runtime="tensorflow"), "--precision int8 runs on OpenVINO: add --runtime openvino"),
        (dict(precision="int8", runtime="openvino", calibration_images=0), "--calibration-images must be"),
        (dict(precision="int8", runtime="openvino", min_cosine=2.0), "--min-cosine must be a finite number >= -1"),
    ],
)
def test_int8_option_mistakes(tmp_path, options, expected):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    with pytest.raises(ConfigError, match=expected.replace("-", r"\-")):
        extract(data, tmp_path / "out", verbose=False, **dict(MOBILENET, **options))


def test_an_int8_model_planted_in_the_shared_cache_is_checked_against_fp32_before_use(tmp_path):
    """Anyone who may write to the cache can swap the int8 model; the cosine verdict that lets it
    through is this user's own, for those exact bytes, so a planted model is measured first."""
    import shutil

    data = copy_subset(tmp_path / "data", 8, splits=("train",))
    first = extract(data, tmp_path / "o1", cache_dir=tmp_path / "cache", min_cosine=0.5, verbose=False, **INT8)
    assert first.quantized and first.quantization["passed"]
    # planted: a real int8 model, of random weights, where this key's int8 model was
    other = extract(
        data, tmp_path / "o2", cache_dir=tmp_path / "other", min_cosine=-1, verbose=False, **{**INT8, "weights": "none"}
    )
    planted = converted_path(str(tmp_path / "cache"), first.spec, "int8")
    source = converted_path(str(tmp_path / "other"), other.spec, "int8")
    shutil.copy(source, planted)
    shutil.copy(source[:-4] + ".bin", planted[:-4] + ".bin")
    with pytest.raises(QuantizationRefused, match="too far from fp32"):
        extract(data, tmp_path / "o3", cache_dir=tmp_path / "cache", min_cosine=0.5, verbose=False, **INT8)


def test_bf16_is_refused_without_native_bf16_and_otherwise_has_its_own_key_and_check(tmp_path, monkeypatch, capsys):
    from bneck.features.runtimes import cpu
    from bneck.pipeline.cli import main

    data = copy_subset(tmp_path / "data", 8, splits=("train", "test"))
    bf16 = dict(MOBILENET, precision="bf16", min_cosine=0.5)
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: False)  # an AVX2-only CPU, whatever runs the test
    with pytest.raises(ConfigError, match="needs a CPU that computes bf16 natively") as err:
        extract(data, tmp_path / "refused", verbose=False, **bf16)
    assert "Received: precision='bf16'" in str(err.value) and not (tmp_path / "refused").exists()
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: True)  # and a CPU with it
    fp32 = extract(data, tmp_path / "fp32", runtime="openvino", verbose=False, **MOBILENET)
    report = extract(data, tmp_path / "bf16", verbose=False, **bf16)
    assert report.runtime == "openvino" and report.spec.key != fp32.spec.key  # its own key
    assert json.loads(report.spec.quantization)["precision"] == "bf16" and report.forward_images == 32
    with h5py.File(tmp_path / "bf16" / "test.h5") as f:
        assert f.attrs["precision"] == "bf16"
        check = json.loads(f.attrs["quantization_check"])
    assert check["passed"] and check["min_cosine"] == 0.5 and check["check_images"] == 4
    # the recorded cosine is what the features themselves show (on other images here)
    a = read_features(str(tmp_path / "fp32" / "test.h5")).features
    b = read_features(str(tmp_path / "bf16" / "test.h5")).features
    assert abs(cosine_per_row(a, b).mean() - check["cosine_mean"]) < 0.1
    again = extract(data, tmp_path / "bf16", verbose=False, **bf16)
    assert again.forward_images == 0 and again.quantization["cosine_min"] == check["cosine_min"]  # kept
    # the command line names the precision it checked, and calibrates nothing for bf16
    assert (
        main(
            [
                "extract",
                str(data),
                "--out",
                str(tmp_path / "bf16"),
                "--quiet",
                "--precision",
                "bf16",
                "--min-cosine",
                "0.5",
                "--backbone",
                "mobilenet",
                "--alpha",
                "0.25",
                "--size",
                "224",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"bf16 vs fp32 on 4 held-back training images: cosine min {check['cosine_min']:.4f}" in out
    assert "int8" not in out and "calibrated" not in out
    # predict computes bf16-trained models' features with the fp32 network, and says so by name
    from types import SimpleNamespace

    from bneck.pipeline.predict import choose_runtime

    runtime, why = choose_runtime(SimpleNamespace(kind="classifier"), report.spec, "auto")
    assert runtime == "tensorflow" and why.startswith("bf16 features are made only by `bneck extract`")


def test_an_fp32_model_planted_as_the_int8_one_is_quantised_again(tmp_path):
    """An fp32 model passes the cosine gate against itself; planted where the int8 model of a key lives
    it would make fp32 rows under the int8 key. A model without quantised layers is no int8 model: it is
    quantised again, and the rows are the int8 rows of the first run."""
    import dataclasses
    import shutil

    data = copy_subset(tmp_path / "data", 8, splits=("train",))
    first = extract(data, tmp_path / "o1", cache_dir=tmp_path / "cache", min_cosine=0.5, verbose=False, **INT8)
    int8_path = converted_path(str(tmp_path / "cache"), first.spec, "int8")
    fp32_path = converted_path(str(tmp_path / "cache"), dataclasses.replace(first.spec, quantization=None))
    shutil.copy(fp32_path, int8_path)
    shutil.copy(fp32_path[:-4] + ".bin", int8_path[:-4] + ".bin")
    shutil.rmtree(tmp_path / "cache" / "features")
    again = extract(data, tmp_path / "o2", cache_dir=tmp_path / "cache", min_cosine=0.5, verbose=False, **INT8)
    assert again.quantized and b'type="FakeQuantize"' in open(int8_path, "rb").read()
    a = read_features(str(tmp_path / "o1" / "train.h5")).features
    b = read_features(str(tmp_path / "o2" / "train.h5")).features
    assert cosine_per_row(a, b).min() > 0.999  # the int8 rows again, not fp32 ones


def test_cosine_of_rows_treats_an_all_zero_row_as_unlike_anything_but_another_zero_row():
    """A model whose features are all zero must not pass the gate: its cosine to real features is 0."""
    real = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    other = np.array([[2.0, 4.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(cosine_per_row(real, other), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(cosine_per_row(other, real), [1.0, 0.0, 1.0, 0.0])
