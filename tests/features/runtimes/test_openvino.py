"""Extraction on OpenVINO fp32: same features as TensorFlow (checked on every CPU class), converted once, shared key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bneck.features import extract, read_features
from bneck.features.cache.maintenance import list_entries
from bneck.features.runtimes import cpu
from bneck.features.runtimes.equivalence import CHECK_TOLERANCE, TOLERANCE, RuntimeMismatch, max_relative_difference
from bneck.features.runtimes.openvino import converted_path
from tests.conftest import MOBILENET, ROOT, copy_subset

pytestmark = pytest.mark.extra("openvino")


def test_openvino_fp32_features_equal_tensorflow_and_share_the_key(tmp_path):
    data = copy_subset(tmp_path / "data", 6, splits=("train",))
    tf_report = extract(data, tmp_path / "tf", cache_dir=tmp_path / "tf_cache", verbose=False, **MOBILENET)
    ov_report = extract(
        data, tmp_path / "ov", cache_dir=tmp_path / "ov_cache", runtime="openvino", verbose=False, **MOBILENET
    )
    assert ov_report.forward_images == 12 and ov_report.runtime == "openvino"
    assert ov_report.spec.key == tf_report.spec.key  # fp32: same numbers, same key
    a, b = read_features(str(tmp_path / "tf" / "train.h5")), read_features(str(tmp_path / "ov" / "train.h5"))
    assert a.paths == b.paths
    assert max_relative_difference(b.features, a.features) < TOLERANCE
    assert os.path.isfile(converted_path(str(tmp_path / "ov_cache"), ov_report.spec))
    check = b.attrs["equivalence"]  # measured on this CPU before the first row, and recorded
    assert check["passed"] and check["max_rel_diff"] <= CHECK_TOLERANCE and check["images"] == 8
    assert check["where"].startswith(cpu.signature()) and check["where"].endswith("| f32 | latency")


def _round_to_bf16(weights):
    """What bf16 does to float32 numbers: keep the top 16 bits (8 bits of mantissa)."""
    return [(np.asarray(w, np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32) for w in weights]


def _plant_converted(cache, spec, weights_change):
    """Save, as the cached converted model of ``spec``, the network with its weights changed."""
    import openvino as ov

    from bneck.features.backbones.feature_model import FeatureModel
    from bneck.features.backbones.registry import get_backbone
    from bneck.features.runtimes.openvino import _save

    reference = FeatureModel(get_backbone(spec.backbone), spec)
    reference.model.set_weights(weights_change(reference.model.get_weights()))
    _save(ov, ov.convert_model(reference.forward_function()), converted_path(str(cache), spec))


def _checks():
    from bneck.features.runtimes import trust

    path = os.path.join(trust.state_dir(), trust.RECORD)
    return json.loads(open(path).read()) if os.path.exists(path) else {}


def test_a_converted_model_whose_numbers_are_off_is_refused_before_any_row(tmp_path):
    """On any CPU: a converted model with bf16-rounded weights stands for any runtime that drifts."""
    from bneck.features.backbones.resolve import resolve_spec

    spec = resolve_spec(**MOBILENET)
    _plant_converted(tmp_path / "cache", spec, _round_to_bf16)
    data = copy_subset(tmp_path / "data", 4, splits=("train",))
    says = "differ from TensorFlow's by .* more than the 0.0001 a runtime may show"
    with pytest.raises(RuntimeMismatch, match=says) as err:
        extract(data, tmp_path / "out", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)
    assert "--runtime tensorflow" in str(err.value)
    assert not (tmp_path / "out" / "train.h5").exists()
    assert list_entries(str(tmp_path / "cache"))[0].rows == 0  # not one row under the shared key
    (check,) = _checks().values()
    assert not check["passed"] and check["max_rel_diff"] > CHECK_TOLERANCE


def test_a_model_planted_in_a_shared_cache_is_checked_by_whoever_uses_it(tmp_path, monkeypatch):
    """A verdict kept in the cache could be forged with the model; each user's own record is what counts."""
    from bneck.features.backbones.resolve import resolve_spec

    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    extract(data, tmp_path / "o1", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)
    assert len(_checks()) == 1  # this user checked the model it converted
    spec = resolve_spec(**MOBILENET)  # another writer of the cache swaps in random weights
    _plant_converted(
        tmp_path / "cache", spec, lambda ws: [np.random.default_rng(0).normal(size=w.shape) * 0.1 for w in ws]
    )
    more = copy_subset(tmp_path / "more", 2, splits=("train",), offset=30)
    for state in ("bneck-state", "other-user-state"):  # the user who checked the old bytes, and a new one
        monkeypatch.setenv("BNECK_STATE", str(tmp_path / state))
        with pytest.raises(RuntimeMismatch):
            extract(
                more,
                tmp_path / f"o-{state}",
                cache_dir=tmp_path / "cache",
                runtime="openvino",
                verbose=False,
                **MOBILENET,
            )
    assert list_entries(str(tmp_path / "cache"))[0].rows == 4  # only the honest run's rows


def test_forcing_openvinos_bf16_hint_is_caught_exactly_when_it_changes_the_numbers(tmp_path, monkeypatch):
    """The bug this guards against: the hint left to the CPU. Refused iff the measured drift exceeds the
    tolerance (on a CPU with native bf16 it does; elsewhere OpenVINO ignores the hint and it passes)."""
    import bneck.features.runtimes.openvino_compile as openvino_compile

    monkeypatch.setattr(openvino_compile, "INFERENCE_PRECISION", "bf16")
    data = copy_subset(tmp_path / "data", 4, splits=("train",))
    try:
        extract(data, tmp_path / "out", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)
        refused = False
    except RuntimeMismatch:
        refused = True
    (check,) = _checks().values()
    assert check["where"].endswith("| bf16 | latency")
    assert refused == (check["max_rel_diff"] > CHECK_TOLERANCE) == (not check["passed"])
    assert refused == (not (tmp_path / "out" / "train.h5").exists())


@pytest.mark.parametrize("elsewhere", ["another CPU class", "this CPU, run another way"])
def test_a_check_vouches_only_where_and_how_it_was_made(tmp_path, elsewhere):
    """A check made on another CPU class, or on this one with the model compiled another way (the
    performance mode is part of what was checked), is not taken: the model is checked again here."""
    from bneck.features.runtimes import trust

    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    extract(data, tmp_path / "o1", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)
    ((key, check),) = _checks().items()
    kind, sha, signature, version, precision, mode = key.split(" | ")
    assert mode == "latency"
    where = {
        "another CPU class": f"x86_64:avx,avx2,fma | {version} | {precision} | {mode}",
        "this CPU, run another way": f"{signature} | {version} | {precision}",
    }[elsewhere]
    os.remove(os.path.join(trust.state_dir(), trust.RECORD))  # as if checked only there
    trust.record(kind, sha, where, check)
    more = copy_subset(tmp_path / "more", 2, splits=("train",), offset=20)
    extract(more, tmp_path / "o2", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)
    assert set(_checks()) == {f"{kind} | {sha} | {where}", key}


@pytest.mark.parametrize(
    "package, options, extra",
    [
        ("openvino", ["--runtime", "openvino"], "openvino"),
        ("nncf", ["--runtime", "openvino", "--precision", "int8"], "openvino"),
        ("ray", ["--engine", "ray"], "ray"),
    ],
)
def test_missing_optional_package_says_how_to_install(tmp_path, package, options, extra):
    # A real interpreter in which the import fails, as on a machine without the package.
    code = (
        f"import sys; sys.modules[{package!r}] = None\n"
        "from bneck.pipeline.cli import main\n"
        f"sys.exit(main(['extract', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}, *{options!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert f"needs the {package} package" in done.stderr and f'pip install -e ".[{extra}]"' in done.stderr
    assert "Traceback" not in done.stderr


def _recorded_speed(openvino_per_tensorflow: float) -> None:
    """Set the timings of every recorded OpenVINO check as if OpenVINO took this many times TensorFlow's
    time here: which runtime is faster depends on the CPU, and these tests must not."""
    from bneck.features.runtimes import trust

    with open(os.path.join(trust.state_dir(), trust.RECORD)) as handle:
        checks = json.load(handle)
    for name, check in checks.items():
        kind, sha, where = name.split(" | ", 2)
        if kind == "fp32 vs tensorflow":
            trust.record(kind, sha, where, dict(check, seconds=check["reference_seconds"] * openvino_per_tensorflow))


def test_auto_runs_tensorflow_for_a_few_images_then_the_model_this_user_checked(tmp_path):
    cache = tmp_path / "cache"
    data = copy_subset(tmp_path / "data", 3, splits=("train",))
    first = extract(data, tmp_path / "o1", cache_dir=cache, verbose=False, **MOBILENET)  # auto is the default
    assert first.runtime == "tensorflow" and "too few to pay for converting" in first.runtime_why
    extract(
        copy_subset(tmp_path / "more", 2, splits=("train",), offset=40),
        tmp_path / "o2",
        cache_dir=cache,
        runtime="openvino",
        verbose=False,
        **MOBILENET,
    )  # converts and checks it here
    _recorded_speed(0.5)
    other = copy_subset(tmp_path / "other", 3, splits=("train",), offset=80)
    third = extract(other, tmp_path / "o3", cache_dir=cache, verbose=False, **MOBILENET)
    assert third.runtime == "openvino" and "checked against TensorFlow on this CPU" in third.runtime_why
    assert third.forward_images == 6 and third.spec.key == first.spec.key
    reference = extract(
        other, tmp_path / "o4", cache_dir=tmp_path / "tf_cache", runtime="tensorflow", verbose=False, **MOBILENET
    )
    assert reference.runtime_why == "asked for"
    a, b = (read_features(str(tmp_path / o / "train.h5")) for o in ("o4", "o3"))
    assert b.attrs["runtime"] == "openvino" and max_relative_difference(b.features, a.features) < TOLERANCE


def test_auto_falls_back_to_tensorflow_when_openvino_differs_here(tmp_path, request):
    """Where --runtime openvino refuses (numbers off on this CPU), auto computes with TensorFlow and says so."""
    import dataclasses

    from bneck.features.backbones.resolve import resolve_spec
    from bneck.features.runtimes.registry import get_registered, register_runtime

    openvino = get_registered("openvino")  # a set this small counts as large here
    register_runtime(dataclasses.replace(openvino, auto_from_images=4), replace=True)
    request.addfinalizer(lambda: register_runtime(openvino, replace=True))
    _plant_converted(tmp_path / "cache", resolve_spec(**MOBILENET), _round_to_bf16)
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    report = extract(data, tmp_path / "out", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
    assert report.runtime == "tensorflow" and "OpenVINO was refused on this CPU" in report.runtime_why
    extract(data, tmp_path / "tf", cache_dir=tmp_path / "tf_cache", runtime="tensorflow", verbose=False, **MOBILENET)
    got, expected = (read_features(str(tmp_path / o / "train.h5")) for o in ("out", "tf"))
    assert got.attrs["runtime"] == "tensorflow" and "equivalence" not in got.attrs
    np.testing.assert_array_equal(got.features, expected.features)  # TensorFlow's rows, not OpenVINO's


def test_a_converted_model_checked_here_extracts_new_images_without_tensorflow(tmp_path):
    """With its converted model cached and checked on this CPU, `--runtime auto` makes the rows of an
    extractor whose rows were all removed (`bneck cache gc`) without importing TensorFlow: no network is
    built, neither to check the cut nor to compute."""
    import shutil

    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    extract(data, tmp_path / "o1", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)
    _recorded_speed(0.5)
    shutil.rmtree(tmp_path / "cache" / "features")
    code = (
        "import json, sys; from bneck.features import extract; "
        f"r = extract({str(data)!r}, {str(tmp_path / 'o2')!r}, cache_dir={str(tmp_path / 'cache')!r}, "
        f"verbose=False, **{MOBILENET!r}); "
        "print(json.dumps([r.runtime, r.forward_images, 'tensorflow' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["openvino", 4, False]
    a, b = read_features(str(tmp_path / "o1" / "train.h5")), read_features(str(tmp_path / "o2" / "train.h5"))
    assert a.paths == b.paths and np.array_equal(a.features, b.features)


def test_auto_runs_tensorflow_where_openvino_timed_slower_on_its_check_and_says_so(tmp_path):
    """The check of a converted model times both runtimes on its images; where OpenVINO was slower,
    `--runtime auto` computes with TensorFlow (the same rows) and says why, with the timings."""
    from bneck.features.runtimes import trust

    cache = tmp_path / "cache"
    extract(
        copy_subset(tmp_path / "a", 2, splits=("train",)),
        tmp_path / "o1",
        cache_dir=cache,
        runtime="openvino",
        verbose=False,
        **MOBILENET,
    )
    with open(os.path.join(trust.state_dir(), trust.RECORD)) as handle:
        check = next(c for n, c in json.load(handle).items() if n.startswith("fp32 vs tensorflow"))
    assert check["seconds"] > 0 and check["reference_seconds"] > 0  # measured, on this CPU
    _recorded_speed(3.0)
    report = extract(
        copy_subset(tmp_path / "b", 2, splits=("train",), offset=40),
        tmp_path / "o2",
        cache_dir=cache,
        verbose=False,
        **MOBILENET,
    )
    assert report.runtime == "tensorflow" and "ran this backbone slower than TensorFlow" in report.runtime_why
    assert read_features(str(tmp_path / "o2" / "train.h5")).attrs["runtime"] == "tensorflow"
    _recorded_speed(0.5)
    again = extract(
        copy_subset(tmp_path / "c", 2, splits=("train",), offset=80),
        tmp_path / "o3",
        cache_dir=cache,
        verbose=False,
        **MOBILENET,
    )
    assert again.runtime == "openvino"
