"""Runtimes behind one registry: a runtime registered from this file alone runs `bneck.extract` end to
end, is held to TensorFlow's numbers before its first row, says how to install what it lacks, and an
unknown name gets the closest one. Real MobileNet-0.25 weights and real JPEGs; nothing is mocked."""

from __future__ import annotations

import os

import numpy as np
import pytest

import bneck
from bneck.core.errors import ConfigError
from bneck.features import read_features
from bneck.features.runtimes.equivalence import CHECK_TOLERANCE, TOLERANCE, RuntimeMismatch, max_relative_difference
from bneck.features.runtimes.registry import Runtime, get_runtime, list_runtimes, register_runtime, unregister_runtime
from bneck.pipeline.cli import main
from tests.conftest import MOBILENET, copy_subset


class EagerKerasModel:
    """TensorFlow's numbers through another real path: the Keras model called eagerly on NumPy batches of
    3 images, preprocessing in NumPy (no tf.function, no traced graph). ``scale`` != 1 makes it wrong."""

    converted = quantized = equivalence = quantization_stats = None

    def __init__(self, spec, scale: float = 1.0):
        from bneck.features.backbones.feature_model import build_base, cut_model
        from bneck.features.backbones.registry import get_backbone

        backbone = get_backbone(spec.backbone)
        self.model = cut_model(build_base(backbone, spec), backbone, spec.layer, spec.pool)
        self.preprocess, self.spec, self.scale = backbone.preprocess_fn(), spec, scale
        self.calls = self.images = 0
        self.warmed = False

    def warm_up(self) -> None:
        self.warmed = True

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls, self.images = self.calls + 1, self.images + len(images)
        parts = [
            np.asarray(self.model(self.preprocess(images[i : i + 3].astype(np.float32)), training=False))
            for i in range(0, len(images), 3)
        ]
        return (np.concatenate(parts) * self.scale).astype(self.spec.dtype)


@pytest.fixture
def runtimes():
    """Register the test-only runtimes; every model they build is kept in ``built[name]``."""
    built = {"keras-eager": [], "keras-off": []}

    def builder(name, scale):
        def build(spec, context):
            built[name].append(EagerKerasModel(spec, scale))
            return built[name][-1]

        return build

    register_runtime(Runtime(name="keras-eager", label="Keras eager", build=builder("keras-eager", 1.0)))
    register_runtime(Runtime(name="keras-off", label="Keras off by 1%", build=builder("keras-off", 1.01)))
    register_runtime(
        Runtime(
            name="needs-missing",
            label="Missing",
            build=builder("keras-eager", 1.0),
            modules=("bneck_test_absent_module",),
            install="pip install bneck-test-absent",
        )
    )
    yield built
    for name in ("keras-eager", "keras-off", "needs-missing"):
        unregister_runtime(name)


def test_a_registered_runtime_extracts_end_to_end_with_tensorflows_numbers(tmp_path, runtimes):
    data = copy_subset(tmp_path / "data", 2)
    report = bneck.extract(
        data, tmp_path / "eager", runtime="keras-eager", cache_dir=tmp_path / "c1", verbose=False, **MOBILENET
    )
    assert report.runtime == "keras-eager" and report.runtime_why == "asked for"
    (model,) = runtimes["keras-eager"]  # its model computed every row, after its check and warm-up
    assert model.warmed and model.images == report.forward_images == 12
    bneck.extract(data, tmp_path / "tf", runtime="tensorflow", cache_dir=tmp_path / "c2", verbose=False, **MOBILENET)
    for split in ("train", "validation", "test"):
        got, expected = (read_features(str(tmp_path / o / f"{split}.h5")) for o in ("eager", "tf"))
        assert got.attrs["runtime"] == "keras-eager" and expected.attrs["runtime"] == "tensorflow"
        check = got.attrs["equivalence"]  # checked against TensorFlow before its first row
        assert check["runtime"] == "keras-eager" and check["reference"] == "tensorflow"
        assert check["passed"] and check["max_rel_diff"] <= CHECK_TOLERANCE and check["images"] == 4
        assert got.extractor_key == expected.extractor_key  # fp32: TensorFlow's key
        assert max_relative_difference(got.features, expected.features) <= TOLERANCE


def test_a_registered_runtime_with_other_numbers_is_refused_before_its_first_row(tmp_path, runtimes):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeMismatch, match="keras-off .* differ from the reference's by 1.00e-02"):
        bneck.extract(data, tmp_path / "out", runtime="keras-off", cache_dir=cache, verbose=False, **MOBILENET)
    (model,) = runtimes["keras-off"]
    assert model.images == 0  # its check's passes are not rows: none was computed with it
    rows = [n for _, _, files in os.walk(cache / "features") for n in files if n.startswith("rows-")]
    assert rows == [] and not (tmp_path / "out" / "train.h5").exists()


def test_a_runtime_without_its_package_says_how_to_install_it_before_any_work(tmp_path, runtimes, capsys):
    data = copy_subset(tmp_path / "data", 1, splits=("train",))
    (row,) = [r for r in list_runtimes() if r["name"] == "needs-missing"]
    assert not row["available"] and row["install"] == "pip install bneck-test-absent"
    assert main(["extract", str(data), "--out", str(tmp_path / "out"), "--runtime", "needs-missing"]) == 2
    err = capsys.readouterr().err
    assert "needs the bneck_test_absent_module package" in err and "pip install bneck-test-absent" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert runtimes["keras-eager"] == []  # nothing was built


def test_an_unknown_runtime_gets_the_closest_registered_name(tmp_path, runtimes, capsys):
    assert main(["extract", str(tmp_path), "--out", str(tmp_path / "out"), "--runtime", "keras-eagr"]) == 2
    assert "Did you mean 'keras-eager'?" in capsys.readouterr().err  # a name only the registry knows
    with pytest.raises(ConfigError, match="Did you mean 'openvino'"):
        get_runtime("openvin")
    unregister_runtime("keras-eager")
    with pytest.raises(ConfigError, match="Received: runtime='keras-eager'"):
        bneck.extract(tmp_path, tmp_path / "out", runtime="keras-eager")
    assert not (tmp_path / "out").exists()


@pytest.mark.pure
def test_only_a_runtime_that_checks_itself_may_compute_other_precisions():
    with pytest.raises(ConfigError, match="checks_itself"):
        register_runtime(Runtime(name="int8-unchecked", label="x", build=None, precisions=("fp32", "int8")))
    assert "int8-unchecked" not in [r["name"] for r in list_runtimes()]


@pytest.mark.pure
def test_a_name_is_registered_once_so_nothing_replaces_the_reference_by_accident():
    """A plugin named ``tensorflow`` would become the reference and write rows under TensorFlow's key."""
    from bneck.features.runtimes.registry import get_registered

    tensorflow = get_registered("tensorflow")
    with pytest.raises(ConfigError, match="registered already"):
        register_runtime(Runtime(name="tensorflow", label="impostor", build=None, reference=True))
    assert get_registered("tensorflow") is tensorflow


@pytest.mark.pure
@pytest.mark.parametrize("got_shape", [(3, 12544), (2, 7, 7, 256), (3, 7, 7, 255)])
def test_rows_of_another_shape_never_pass_the_check(got_shape):
    """Flattened rows hold the same numbers; they are still not the reference's rows (nor are fewer rows)."""
    from bneck.features.runtimes.equivalence import RuntimeMismatch, compare

    reference = np.random.default_rng(0).normal(size=(3, 7, 7, 256)).astype(np.float32)
    got = reference.reshape(3, -1)[: got_shape[0]].reshape(got_shape) if got_shape[-1] != 255 else reference[..., :255]
    with pytest.raises(RuntimeMismatch, match="shape"):
        compare(got, reference, "candidate", "this CPU")
