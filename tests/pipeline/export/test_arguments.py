"""``bneck.export``'s parameters: ``format`` (the command's --format) or ``fmt`` (its old name, and the
third positional argument under either name); an unknown, missing or doubled one is a ConfigError naming
what it takes, never a TypeError, and every one of these is said before any model is read."""

from __future__ import annotations

import inspect
import os

import pytest

import bneck
from bneck.core.errors import ConfigError
from bneck.pipeline.artifacts import ArtifactError
from bneck.pipeline.export import export_model

pytestmark = pytest.mark.pure

TAKES = "its parameters are model_dir, out, format, weights, verbose (and fmt, the old name of format)."


def test_the_signature_says_format():
    assert bneck.export.__wrapped__ is export_model  # the API serves it with its errors in keyword words
    assert list(inspect.signature(bneck.export).parameters) == [
        "model_dir",
        "out",
        "format",
        "weights",
        "verbose",
        "fmt",
    ]


@pytest.mark.parametrize("args, kwargs", [((), {"format": "no-such"}), ((), {"fmt": "no-such"}), (("no-such",), {})])
def test_format_fmt_and_the_third_argument_all_name_the_format(tmp_path, args, kwargs):
    # the model folder does not exist: the format's ConfigError comes first, so the format was read
    with pytest.raises(ConfigError, match=r"^format must be one of 'keras', .* Received: format='no-such'\."):
        bneck.export(str(tmp_path / "missing"), str(tmp_path / "out"), *args, verbose=False, **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", [{"format": "keras"}, {"fmt": "keras"}, {}])
def test_a_good_format_goes_on_to_the_model(tmp_path, how):
    with pytest.raises(ArtifactError, match="model folder not found"):
        bneck.export(str(tmp_path / "missing"), str(tmp_path / "out"), verbose=False, **how)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "args, kwargs, says",
    [
        (
            (),
            {"format": "onnx", "fmt": "onnx"},
            "bneck.export() takes the format once, as format= (fmt= is its old name), not both. "
            "Received: format='onnx', fmt='onnx'.",
        ),
        (("onnx",), {"fmt": "keras"}, "not both. Received: format='onnx', fmt='keras'."),
        (("onnx",), {"format": "onnx"}, f"bneck.export() multiple values for argument 'format'; {TAKES}"),
        ((), {"formats": "onnx"}, f"bneck.export() got an unexpected keyword argument 'formats'; {TAKES}"),
        ((), {"quiet": True}, "unexpected keyword argument 'quiet'"),
        (("onnx", None, False, "extra"), {}, "too many positional arguments"),
    ],
)
def test_an_unknown_or_doubled_parameter_is_one_config_error_before_any_work(tmp_path, args, kwargs, says):
    # the model folder does not exist and the format is fine: the parameters are refused first
    with pytest.raises(ConfigError) as caught:
        bneck.export(str(tmp_path / "missing"), str(tmp_path / "out"), *args, **kwargs)
    said = str(caught.value)
    assert says in said and "\n" not in said and not isinstance(caught.value, TypeError)
    assert os.listdir(tmp_path) == []


def test_a_missing_argument_is_a_config_error_too():
    with pytest.raises(ConfigError, match=r"missing a required argument: 'out'; its parameters are model_dir"):
        bneck.export("models/logreg", format="onnx")
