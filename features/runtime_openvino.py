"""Extraction on OpenVINO, fp32 or int8: the same graph, run by a faster CPU runtime.

The TensorFlow feature function (uint8 -> the backbone's preprocessing -> the cut
model -> cast) is converted once with ``openvino.convert_model`` and saved under
``CACHE/openvino/<extractor key>-fp32.xml``; later runs read the saved model and
never build the Keras network. fp32 features equal TensorFlow's within 1e-3
relative (tested), so they share TensorFlow's cache key.

int8 (``spec.quantization`` set) quantises the saved fp32 model with NNCF on the
calibration plan (``quantize.py``) and saves it as ``<int8 key>-int8.xml`` with its
cosine check in ``<int8 key>-int8.json``; later runs read both back.

Numbers are pinned, not left to the machine: models are compiled with an explicit
f32 inference precision (OpenVINO's CPU plugin otherwise picks bf16 on CPUs with
native bf16, silently), and before an fp32 model makes its first row on a CPU class
(``cpu.signature()``), its output on a sample of the run's images is compared with
TensorFlow's (``check_against_tensorflow``). The measured difference is kept beside
the model and written into every feature file; above ``equivalence.TOLERANCE`` the
runtime is refused, so it never shares TensorFlow's key with other numbers.
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
from .key import ExtractorSpec
from .openvino_core import compile_cpu, import_openvino
from .quantize import CalibrationPlan, quantize




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
    """Return (path of the saved fp32 model, the Keras FeatureModel if it was converted now, else None)."""
    path = converted_path(cache_dir, spec)
    if os.path.isfile(path):
        return path, None
    from .model import FeatureModel

    reference = FeatureModel(backbone, spec)
    _save(ov, ov.convert_model(reference.forward_function()), path)
    return path, reference


class OpenVINOFeatureModel:
    """Callable uint8 batch -> features, like ``model.FeatureModel``, on OpenVINO's CPU plugin.

    ``converted`` is True when this instance had to build the Keras network and
    convert it (False when the saved model was read from the cache); for int8,
    ``quantized`` says the same of quantisation and ``quantization_stats`` holds the
    cosine check. An int8 spec needs ``plan`` unless its model is already cached.
    """

    def __init__(self, backbone: Backbone, spec: ExtractorSpec, cache_dir: str,
                 plan: Optional[CalibrationPlan] = None, workers: int = 0):
        from . import openvino_core

        ov = import_openvino()
        self.spec, self.backbone, self.cache_dir = spec, backbone, cache_dir
        self.inference_precision = inference_precision = openvino_core.INFERENCE_PRECISION
        self.quantized, self.quantization_stats, self.equivalence = False, None, None
        fp32_spec = dataclasses.replace(spec, quantization=None)
        self._reference = None  # the Keras model, when this instance had to build it
        if spec.quantization is None:
            path, self._reference = _fp32_graph(ov, backbone, fp32_spec, cache_dir)
        else:
            path = converted_path(cache_dir, spec, "int8")
            if not os.path.isfile(path):
                fp32_path, self._reference = _fp32_graph(ov, backbone, fp32_spec, cache_dir)
                graph, stats = quantize(ov, ov.Core().read_model(fp32_path), plan,
                                        spec.input_size, workers)
                _save(ov, graph, path, stats)
                self.quantized = True
            with open(path[:-4] + ".json") as handle:
                self.quantization_stats = json.load(handle)
        self.converted = self._reference is not None
        self._compiled = compile_cpu(ov, ov.Core().read_model(path), inference_precision)
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

    def check_against_tensorflow(self, sample: np.ndarray) -> dict:
        """Compare this model with TensorFlow on ``sample`` (uint8 images), once per CPU class.

        Returns the check (kept in ``CACHE/openvino/<key>-fp32.checks.json`` by CPU
        signature, OpenVINO version and precision) and sets ``equivalence``. Raises
        RuntimeMismatch when the features differ beyond ``equivalence.TOLERANCE``.
        """
        from . import cpu
        from .equivalence import TOLERANCE, RuntimeMismatch, max_relative_difference

        record = converted_path(self.cache_dir, self.spec)[:-4] + ".checks.json"
        where = f"{cpu.signature()} | openvino {import_openvino().get_version()} | {self.inference_precision}"
        checks = _read_json(record)
        if where not in checks:
            if self._reference is None:
                from .model import FeatureModel
                self._reference = FeatureModel(self.backbone, self.spec)
            want = self._reference(sample)
            got = np.asarray(self._compiled(np.ascontiguousarray(sample))[0], dtype=self.spec.dtype)
            diff = max_relative_difference(got, want)
            checks[where] = {"runtime": "openvino", "reference": "tensorflow", "max_rel_diff": diff,
                             "images": int(len(sample)), "tolerance": TOLERANCE, "passed": diff <= TOLERANCE,
                             "cpu": cpu.signature(), "inference_precision": self.inference_precision,
                             "openvino_version": import_openvino().get_version()}
            _write_json(record, checks)
        self.equivalence = checks[where]
        if not self.equivalence["passed"]:
            raise RuntimeMismatch(
                f"OpenVINO on this CPU ({self.equivalence['cpu']}, inference precision "
                f"{self.inference_precision}) gives features that differ from TensorFlow's by "
                f"{self.equivalence['max_rel_diff']:.2e} relative on {self.equivalence['images']} of this "
                f"run's images, more than the {TOLERANCE:g} that rows sharing one cache key may differ by. "
                f"Nothing was computed with it. Use --runtime tensorflow (the check is kept in {record}).")
        return self.equivalence


def _read_json(path: str) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _write_json(path: str, obj: dict) -> None:
    from .atomic import atomic_open

    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=1, sort_keys=True)
