"""Extraction on OpenVINO, fp32 or int8: the same graph, run by a faster CPU runtime.

The TensorFlow feature function (uint8 -> the backbone's preprocessing -> the cut
model -> cast) is converted once with ``openvino.convert_model`` and saved under
``CACHE/openvino/<extractor key>-fp32.xml``; later runs read the saved model and
never build the Keras network. fp32 features equal TensorFlow's within 1e-3
relative (tested), so they share TensorFlow's cache key.

int8 (``spec.quantization`` set) quantises the saved fp32 model with NNCF on the
calibration plan (``quantize.py``) and saves it as ``<int8 key>-int8.xml`` with its
cosine check in ``<int8 key>-int8.json``; later runs read both back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Optional

import numpy as np

from .backbones import Backbone
from .errors import ConfigError
from .key import ExtractorSpec
from .quantize import CalibrationPlan, quantize

INSTALL_HINT = 'pip install -e ".[openvino]"  (or: pip install openvino)'


def import_openvino():
    """Return the ``openvino`` module; raises ConfigError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise ConfigError(f"--runtime openvino needs the openvino package, which is not installed. "
                          f"Install it with: {INSTALL_HINT}. Or use --runtime tensorflow.") from None
    return openvino


def converted_path(cache_dir: str, spec: ExtractorSpec, precision: str = "fp32") -> str:
    """Return where the converted model of ``spec`` lives in the cache."""
    return os.path.join(cache_dir, "openvino", f"{spec.key}-{precision}.xml")


def _save(ov, graph, path: str, stats: Optional[dict] = None) -> None:
    """Save ``graph`` as ``path`` (.xml), its .bin and ``stats`` (.json); the .xml last: it means complete."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".convert-", dir=folder)
    try:
        ov.save_model(graph, os.path.join(staging, "model.xml"), compress_to_fp16=False)
        os.replace(os.path.join(staging, "model.bin"), path[:-4] + ".bin")
        if stats is not None:
            with open(os.path.join(staging, "stats.json"), "w") as handle:
                json.dump(stats, handle, indent=1, sort_keys=True)
            os.replace(os.path.join(staging, "stats.json"), path[:-4] + ".json")
        os.replace(os.path.join(staging, "model.xml"), path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fp32_graph(ov, backbone: Backbone, spec: ExtractorSpec, cache_dir: str):
    """Return (path of the saved fp32 model, whether it was converted now)."""
    path = converted_path(cache_dir, spec)
    if os.path.isfile(path):
        return path, False
    from .model import FeatureModel

    _save(ov, ov.convert_model(FeatureModel(backbone, spec).forward_function()), path)
    return path, True


class OpenVINOFeatureModel:
    """Callable uint8 batch -> features, like ``model.FeatureModel``, on OpenVINO's CPU plugin.

    ``converted`` is True when this instance had to build the Keras network and
    convert it (False when the saved model was read from the cache); for int8,
    ``quantized`` says the same of quantisation and ``quantization_stats`` holds the
    cosine check. An int8 spec needs ``plan`` unless its model is already cached.
    """

    def __init__(self, backbone: Backbone, spec: ExtractorSpec, cache_dir: str,
                 plan: Optional[CalibrationPlan] = None, workers: int = 0):
        ov = import_openvino()
        self.spec = spec
        self.quantized, self.quantization_stats = False, None
        fp32_spec = dataclasses.replace(spec, quantization=None)
        if spec.quantization is None:
            path, self.converted = _fp32_graph(ov, backbone, fp32_spec, cache_dir)
        else:
            path = converted_path(cache_dir, spec, "int8")
            self.converted = False
            if not os.path.isfile(path):
                fp32_path, self.converted = _fp32_graph(ov, backbone, fp32_spec, cache_dir)
                graph, stats = quantize(ov, ov.Core().read_model(fp32_path), plan,
                                        spec.input_size, workers)
                _save(ov, graph, path, stats)
                self.quantized = True
            with open(path[:-4] + ".json") as handle:
                self.quantization_stats = json.load(handle)
        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(path), "CPU")
        self.output_shape = tuple(int(d) for d in self._compiled.output(0).get_partial_shape()[1:].to_shape())
        self.version = ov.get_version()
        self.calls = 0
        self.images = 0

    def warm_up(self) -> None:
        """Run one blank image (not counted), so the first batch does not pay for set-up."""
        size = self.spec.input_size
        self._compiled(np.zeros((1, size, size, 3), np.uint8))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Return features for a (n, size, size, 3) uint8 batch."""
        self.calls += 1
        self.images += len(images)
        out = self._compiled(np.ascontiguousarray(images))[0]
        return np.asarray(out, dtype=self.spec.dtype)
