"""Extraction on OpenVINO fp32: same features as TensorFlow, converted once, shared key."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from features import extract, read_features
from features.runtime_openvino import converted_path
from tests.conftest import MOBILENET, ROOT, copy_subset


def test_openvino_fp32_features_equal_tensorflow_and_share_the_key(tmp_path):
    data = copy_subset(tmp_path / "data", 6, splits=("train",))
    tf_report = extract(data, tmp_path / "tf", cache_dir=tmp_path / "tf_cache", verbose=False, **MOBILENET)
    ov_report = extract(data, tmp_path / "ov", cache_dir=tmp_path / "ov_cache", runtime="openvino",
                        verbose=False, **MOBILENET)
    assert ov_report.forward_images == 12 and ov_report.runtime == "openvino"
    assert ov_report.spec.key == tf_report.spec.key  # fp32: same numbers, same key
    a, b = read_features(str(tmp_path / "tf" / "train.h5")), read_features(str(tmp_path / "ov" / "train.h5"))
    assert a.paths == b.paths
    rel = np.abs(a.features - b.features).max() / np.abs(a.features).max()
    assert rel < 1e-3, rel
    assert os.path.isfile(converted_path(str(tmp_path / "ov_cache"), ov_report.spec))


def test_converted_model_is_reused_not_converted_again(tmp_path):
    cache = tmp_path / "cache"
    first = extract(copy_subset(tmp_path / "a", 2, splits=("train",)), tmp_path / "fa", cache_dir=cache,
                    runtime="openvino", verbose=False, **MOBILENET)
    assert first.converted is True and first.forward_images == 4
    # other images, same extractor: the network runs again, from the saved conversion
    second = extract(copy_subset(tmp_path / "b", 2, splits=("train",), offset=10), tmp_path / "fb",
                     cache_dir=cache, runtime="openvino", verbose=False, **MOBILENET)
    assert second.converted is False and second.forward_images == 4
    xml = converted_path(str(cache), second.spec)
    assert os.path.isfile(xml) and os.path.isfile(xml[:-4] + ".bin")


@pytest.mark.parametrize("package, options, extra", [
    ("openvino", ["--runtime", "openvino"], "openvino"),
    ("nncf", ["--runtime", "openvino", "--precision", "int8"], "openvino"),
    ("ray", ["--engine", "ray"], "ray"),
])
def test_missing_optional_package_says_how_to_install(tmp_path, package, options, extra):
    # A real interpreter in which the import fails, as on a machine without the package.
    code = (f"import sys; sys.modules[{package!r}] = None\n"
            "from pipeline.cli import main\n"
            f"sys.exit(main(['extract', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}, *{options!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert f"needs the {package} package" in done.stderr and f'pip install -e ".[{extra}]"' in done.stderr
    assert "Traceback" not in done.stderr
