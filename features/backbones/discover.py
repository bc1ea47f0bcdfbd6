"""Derive a backbone's catalog record from the installed ``keras.applications`` constructor itself.

Everything a record holds is asked of Keras or read from the graph, never typed:

- the default input size and the smallest size: the arguments the constructor passes
  to ``imagenet_utils.obtain_input_shape`` (recorded while it builds);
- the no-top ImageNet weights file, where Keras downloads it from and the md5 it
  publishes: the arguments the constructor passes to ``get_file`` (recorded, and the
  download refused, while it builds with ``weights="imagenet"``);
- the preprocessing: what the family's ``preprocess_input`` does to a probe image;
- default layer, cut points, unfreeze points, parameters, multiply-adds: ``graph``.

``scripts/backbone_catalog.py`` writes every record into ``catalog.json``, so a cache hit
never imports TensorFlow; a constructor a later Keras adds is derived on first use.
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np

from bneck.features.backbones.graph import describe_graph, fresh_layer_names

PREPROCESSING = {
    "caffe": "caffe: RGB->BGR, ImageNet mean subtracted",
    "tf": "tf: scaled to [-1, 1]",
    "torch": "torch: scaled to [0, 1], then ImageNet mean and std normalised",
    "none": "none outside the model: rescaling and normalisation are layers of the model",
}


class _Recorded(Exception):
    """Raised from inside a constructor once what it was about to fetch is recorded."""


def constructors() -> list[str]:
    """Every image-classification constructor of the installed ``keras.applications``."""
    import keras

    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


def public_module(constructor: str) -> str:
    """The ``keras.applications`` submodule whose ``preprocess_input`` belongs to ``constructor``."""
    import keras

    source = getattr(keras.applications, constructor).__module__.rsplit(".", 1)[-1]
    return source if hasattr(keras.applications, source) else constructor.lower()


def preprocessing_kind(module: str) -> str:
    """Which of the four Keras preprocessing modes ``keras.applications.<module>.preprocess_input`` is."""
    preprocess = importlib.import_module(f"keras.applications.{module}").preprocess_input
    probe = np.array([[[[10.0, 120.0, 250.0]]]], dtype="float32")
    got = np.asarray(preprocess(probe.copy()), dtype="float64").ravel()
    expected = {
        "none": probe.ravel(),
        "tf": probe.ravel() / 127.5 - 1,
        "caffe": probe.ravel()[::-1] - np.array([103.939, 116.779, 123.68]),
        "torch": (probe.ravel() / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
    }
    for kind, want in expected.items():
        if np.allclose(got, want, atol=1e-3):
            return kind
    raise ValueError(f"keras.applications.{module}.preprocess_input is none of {', '.join(expected)}")


@contextlib.contextmanager
def _recording(calls: dict):
    """Record ``obtain_input_shape``'s and ``get_file``'s arguments; ``get_file`` then stops the build."""
    from keras.src.applications import imagenet_utils
    from keras.src.utils import file_utils

    real_shape, real_get = imagenet_utils.obtain_input_shape, file_utils.get_file

    def shape(*args, **kwargs):
        calls.setdefault("shape", kwargs)
        return real_shape(*args, **kwargs)

    def get_file(fname=None, origin=None, *args, **kwargs):
        calls["weights"] = dict(file=fname, origin=origin, md5=kwargs.get("file_hash"))
        raise _Recorded

    imagenet_utils.obtain_input_shape, file_utils.get_file = shape, get_file
    try:
        yield
    finally:
        imagenet_utils.obtain_input_shape, file_utils.get_file = real_shape, real_get


def _sizes_and_weights(constructor: str) -> dict:
    import keras

    calls: dict = {}
    with _recording(calls), fresh_layer_names(), contextlib.suppress(_Recorded):
        getattr(keras.applications, constructor)(include_top=False, weights="imagenet")
    shape = calls.get("shape", {})
    return {
        "default_size": int(shape.get("default_size") or 224),
        "min_size": int(shape.get("min_size") or 32),
        "weights": calls.get("weights"),
    }


def derive_record(constructor: str) -> dict:
    """The catalog record of ``constructor`` (builds it once with random weights at its default size)."""
    import keras

    record = {"constructor": constructor, "module": public_module(constructor)}
    record["preprocessing"] = PREPROCESSING[preprocessing_kind(record["module"])]
    record.update(_sizes_and_weights(constructor))
    side = record["default_size"]
    with fresh_layer_names():
        model = getattr(keras.applications, constructor)(
            include_top=False, weights=None, input_tensor=keras.Input((side, side, 3), name="input_layer")
        )
    record.update(describe_graph(model, side))
    return record
