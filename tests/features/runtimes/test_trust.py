"""What a runtime check can and cannot be fooled by: the tail of real images, records that are not
records, converted models that are damaged or planted, state that cannot be written."""

from __future__ import annotations

import json
import os
import shutil
import threading

import pytest

from bneck.core.errors import ConfigError
from bneck.features import extract, read_features
from bneck.features.runtimes.equivalence import CHECK_TOLERANCE, TOLERANCE, relative_differences
from bneck.features.runtimes.openvino import checked_here, converted_path
from tests.conftest import DATA, MOBILENET, copy_subset

OPENVINO = pytest.mark.extra("openvino")  # every test but the one of the record file alone


@OPENVINO
def test_a_sampled_check_leaves_room_for_the_worst_real_image(tmp_path):
    """The check sees 8 training images; the rows it then makes cover every image. Here the validation
    split holds the two images whose OpenVINO rows differ most from TensorFlow's among the reference
    split's 4,000 (1.1e-3 on an AVX-512 bf16 CPU): the check must pass far inside the key's tolerance,
    and every row, tail included, must stay inside it (what `cache verify --recompute` enforces)."""
    data = copy_subset(tmp_path / "data", 4, splits=("train",))
    for name in ("cats/cat.1976.jpg", "dogs/dog.1976.jpg", "dogs/dog.1783.jpg"):
        (data / "validation" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / "test" / name, data / "validation" / name)
    ov = extract(data, tmp_path / "ov", cache_dir=tmp_path / "c1", runtime="openvino", verbose=False, **MOBILENET)
    tf = extract(data, tmp_path / "tf", cache_dir=tmp_path / "c2", runtime="tensorflow", verbose=False, **MOBILENET)
    assert ov.spec.key == tf.spec.key
    check = read_features(str(tmp_path / "ov" / "train.h5")).attrs["equivalence"]
    assert check["max_rel_diff"] <= CHECK_TOLERANCE and check["tolerance"] == CHECK_TOLERANCE
    assert CHECK_TOLERANCE * 10 <= TOLERANCE
    for split in ("train", "validation"):
        a, b = read_features(str(tmp_path / "ov" / f"{split}.h5")), read_features(str(tmp_path / "tf" / f"{split}.h5"))
        assert a.paths == b.paths and relative_differences(a.features, b.features).max() <= TOLERANCE


def _checked_cache(tmp_path):
    """A cache holding a converted model this user checked; returns (data, cache, spec, record path, key)."""
    from bneck.features.runtimes import trust

    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    report = extract(
        data, tmp_path / "o0", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET
    )
    record = os.path.join(trust.state_dir(), trust.RECORD)
    (key,) = json.loads(open(record).read())
    return data, tmp_path / "cache", report.spec, record, key


@OPENVINO
@pytest.mark.parametrize(
    "forged",
    [
        "yes",
        {},
        {"passed": True},
        {"max_rel_diff": "0", "passed": True},
        {"max_rel_diff": None, "passed": True},
        {"max_rel_diff": True, "passed": True},
        {"max_rel_diff": 0.5, "passed": "false"},
        {"max_rel_diff": 0.5, "passed": True},
    ],
    ids=[
        "string",
        "empty",
        "no-number",
        "number-as-text",
        "null",
        "bool",
        "flag-as-text",
        "big-difference-marked-passed",
    ],
)
def test_a_record_is_judged_by_its_measured_number_never_by_a_flag(tmp_path, forged):
    data, cache, spec, record, key = _checked_cache(tmp_path)
    json.dump({key: forged}, open(record, "w"))
    assert not checked_here(spec, str(cache))  # auto never takes OpenVINO on such a record
    auto = extract(data, tmp_path / "auto", cache_dir=cache, verbose=False, **MOBILENET)
    assert auto.runtime == "tensorflow"
    shutil.rmtree(cache / "features")
    if isinstance(forged, dict) and isinstance(forged.get("max_rel_diff"), float):
        with pytest.raises(ConfigError, match="more than the 0.0001 a runtime may show"):  # refused, one paragraph
            extract(data, tmp_path / "ov", cache_dir=cache, runtime="openvino", verbose=False, **MOBILENET)
    else:  # no usable record: checked again, and the new check is a real one
        extract(data, tmp_path / "ov", cache_dir=cache, runtime="openvino", verbose=False, **MOBILENET)
        assert json.loads(open(record).read())[key]["max_rel_diff"] <= CHECK_TOLERANCE


@pytest.mark.pure
def test_a_fifo_where_the_record_lives_is_no_record_and_never_blocks(tmp_path):
    from bneck.features.runtimes import trust

    os.makedirs(trust.state_dir(), exist_ok=True)
    os.mkfifo(os.path.join(trust.state_dir(), trust.RECORD))
    found = []
    reader = threading.Thread(target=lambda: found.append(trust.recorded("k", "s", "w", ())), daemon=True)
    reader.start()
    reader.join(10)
    assert found == [None]


@OPENVINO
def test_a_state_folder_that_cannot_be_written_is_one_paragraph(tmp_path, monkeypatch):
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("BNECK_STATE", str(blocker))
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    with pytest.raises(ConfigError, match=r"could not write it there.*BNECK_STATE"):
        extract(data, tmp_path / "o", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)


def _truncate_xml(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@OPENVINO
@pytest.mark.parametrize("damage", ["xml cut", "bin empty", "bin missing", "xml not a model"])
def test_a_damaged_converted_model_is_converted_again_and_the_rows_are_right(tmp_path, damage):
    data, cache, spec, _, _ = _checked_cache(tmp_path)
    path = converted_path(str(cache), spec)
    if damage == "xml cut":
        _truncate_xml(path)
    elif damage == "bin empty":
        open(path[:-4] + ".bin", "wb").close()
    elif damage == "bin missing":
        os.remove(path[:-4] + ".bin")
    else:
        open(path, "w").write("<not a model/>")
    shutil.rmtree(cache / "features")
    report = extract(data, tmp_path / "o1", cache_dir=cache, runtime="openvino", verbose=False, **MOBILENET)
    assert report.converted and report.forward_images == 4
    first = read_features(str(tmp_path / "o0" / "train.h5")).features
    again = read_features(str(tmp_path / "o1" / "train.h5")).features
    assert relative_differences(again, first).max() <= CHECK_TOLERANCE


@OPENVINO
@pytest.mark.parametrize("in_the_way", ["a folder named like the model", "a file named like the folder"])
def test_something_in_the_way_of_the_converted_model_is_one_paragraph(tmp_path, in_the_way):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    spec_report = extract(
        data, tmp_path / "tf", cache_dir=tmp_path / "cache", runtime="tensorflow", verbose=False, **MOBILENET
    )
    path = converted_path(str(tmp_path / "cache"), spec_report.spec)
    if in_the_way.startswith("a folder"):
        os.makedirs(path)
    else:
        open(os.path.dirname(path), "w").close()
    shutil.rmtree(tmp_path / "cache" / "features")
    with pytest.raises(ConfigError, match="converted model") as err:
        extract(data, tmp_path / "o", cache_dir=tmp_path / "cache", runtime="openvino", verbose=False, **MOBILENET)
    assert "--runtime tensorflow" in str(err.value)
