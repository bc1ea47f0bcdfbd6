"""Offline: nothing reaches for the network, except ImageNet weights missing from the Keras cache."""

from __future__ import annotations

from tests.conftest import copy_subset
from tests.reliability.conftest import MOBILENET_ARGS


def test_every_stage_runs_without_any_network_attempt(tmp_path, bneck):
    data = copy_subset(tmp_path / "data", 3)
    steps = [
        ["extract", data, "--out", tmp_path / "features", "--quiet", *MOBILENET_ARGS],
        # OpenVINO reports its own import to Google Analytics unless told not to (or CI=true, unset here)
        [
            "extract",
            data,
            "--out",
            tmp_path / "ov_features",
            "--quiet",
            "--runtime",
            "openvino",
            "--cache-dir",
            tmp_path / "ov_cache",
            *MOBILENET_ARGS,
        ],
        [
            "train",
            tmp_path / "features",
            "--classifier",
            "dense,logreg",
            "--out",
            tmp_path / "models",
            "--epochs",
            "2",
            "--quiet",
        ],
        ["predict", tmp_path / "models" / "logreg", data / "test"],
        [
            "finetune",
            tmp_path / "models" / "dense",
            "--data",
            data,
            "--out",
            tmp_path / "ft",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--quiet",
        ],
        ["predict", tmp_path / "ft", data / "test" / "cats"],
    ]
    for args in steps:
        done = bneck(tmp_path, args, offline=True, env={"CI": "false"})
        assert done.returncode == 0, (args[0], done.output[-2000:])
        assert "NETWORK ATTEMPT" not in done.output, (args[0], done.output[-2000:])


def test_missing_imagenet_weights_try_the_download_once_then_say_where_the_file_goes(tmp_path, bneck):
    data = copy_subset(tmp_path / "data", 1, splits=("train",))
    done = bneck(
        tmp_path,
        ["extract", data, "--out", tmp_path / "out", "--backbone", "resnet50", "--weights", "imagenet", "--quiet"],
        offline=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.output
    attempts = [line for line in done.output.splitlines() if line.startswith("NETWORK ATTEMPT")]
    assert attempts and all("storage.googleapis.com" in a or "socket" in a for a in attempts)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in done.output
    assert "bneck weights add FILE" in done.output and "--weights PATH" in done.output
