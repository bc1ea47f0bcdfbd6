"""Extraction on OpenVINO, fp32 or int8: the same graph, run by a faster CPU runtime.

The TensorFlow feature function (uint8 -> the backbone's preprocessing -> the cut
model -> cast) is converted once with ``openvino.convert_model`` and saved under
``CACHE/openvino/<extractor key>-fp32.xml``; later runs read the saved model and
never build the Keras network. fp32 features equal TensorFlow's within
``equivalence.TOLERANCE``, so they share TensorFlow's cache key. int8 (``spec.quantization``
set) quantises the fp32 model with NNCF on the calibration plan and saves it as
``<int8 key>-int8.xml``.

Numbers are pinned and checked, not assumed:

* models are compiled with an explicit f32 inference precision (OpenVINO's CPU plugin
  otherwise picks bf16 on CPUs with native bf16, silently);
* a model is read once into memory, hashed, and compiled from those bytes;
* before a model makes its first row, this user must have checked exactly those bytes
  on this CPU class (``runtimes.trust``, outside the shared cache, which anyone who may
  write to the cache could fill): an fp32 model against TensorFlow on a sample of the
  run's images (refused beyond the tolerance), an int8 model against the checked fp32
  one on held-back training images (its cosine, for the gate). A model found in the
  cache without such a check is checked first.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from bneck.core.errors import BneckError, ConfigError
from bneck.core.files import open_regular
from bneck.core.hashing import sha256_bytes
from bneck.core.private import make_private_folder
from bneck.features.backbones.registry import Backbone
from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.runtimes.openvino_compile import INFERENCE_PRECISION, MODE, compile_cpu, import_openvino
from bneck.features.runtimes.quantize import (
    CalibrationPlan,
    bf16_cosine_check,
    cosine_check,
    quantize,
    reduced_precision,
)
from bneck.features.runtimes.registry import Runtime, register_runtime

FP32_CHECK, INT8_CHECK, BF16_CHECK = "fp32 vs tensorflow", "int8 vs fp32", "bf16 vs fp32"
FP32_NUMBERS = ("max_rel_diff",)  # what a recorded fp32 check must hold, as a finite number


def fp32_trusted(check: dict) -> bool:
    """Whether an fp32 check's measured difference lets the model share TensorFlow's key."""
    from bneck.features.runtimes.equivalence import CHECK_TOLERANCE

    return check["max_rel_diff"] <= CHECK_TOLERANCE


def where_checked(inference_precision: str = INFERENCE_PRECISION) -> str:
    """The CPU class, OpenVINO version and precision a check holds for."""
    from bneck.features.runtimes import cpu

    return f"{cpu.signature()} | openvino {import_openvino().get_version()} | {inference_precision} | {MODE}"


def converted_path(cache_dir: str, spec: ExtractorSpec, precision: str = "fp32") -> str:
    """Return where the converted model of ``spec`` lives in the cache."""
    return os.path.join(cache_dir, "openvino", f"{spec.key}-{precision}.xml")


def _save(ov, graph, path: str) -> None:
    """Save ``graph`` as ``path`` (.xml) and its .bin; the .xml last: it means complete."""
    folder = os.path.dirname(path)
    try:
        make_private_folder(os.path.dirname(folder))  # the cache: private when bneck makes it
        os.makedirs(folder, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".convert-", dir=folder)
    except OSError as exc:
        raise ConfigError(
            f"the converted model belongs in {folder}, and that folder cannot be made or written: "
            f"{exc.strerror or exc}. Remove what is in the way in the cache, or use "
            "--runtime tensorflow."
        ) from None
    try:
        ov.save_model(graph, os.path.join(staging, "model.xml"), compress_to_fp16=False)
        os.replace(os.path.join(staging, "model.bin"), path[:-4] + ".bin")
        os.replace(os.path.join(staging, "model.xml"), path)
    except OSError as exc:
        raise ConfigError(
            f"the converted model could not be saved as {path}: {exc.strerror or exc} (is something "
            "else, such as a folder, in its place?). Remove it from the cache, or use "
            "--runtime tensorflow."
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _ModelBytes:
    """A saved OpenVINO model read once: its .xml and .bin bytes, their sha256, and the model from them."""

    def __init__(self, path: str):
        with open_regular(path) as handle:
            self.xml = handle.read()
        with open_regular(path[:-4] + ".bin") as handle:
            self.weights = handle.read()
        self.sha256 = sha256_bytes(self.xml + b"\0" + self.weights)

    def read(self, ov):
        return ov.Core().read_model(
            model=self.xml.decode("utf-8"), weights=ov.Tensor(np.frombuffer(self.weights, dtype=np.uint8))
        )


def _usable(ov, path: str, int8: bool = False) -> _ModelBytes | None:
    """The saved model at ``path`` read and parsed, or None when there is none or it is damaged (cut,
    missing its .bin, not a model; for ``int8``, a model without quantised layers): made again then."""
    if not os.path.isfile(path):
        return None
    try:
        saved = _ModelBytes(path)
        graph = saved.read(ov)
    except (OSError, RuntimeError, ValueError, UnicodeDecodeError):
        return None
    if int8 and not any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops()):
        return None
    return saved


def _fp32_graph(ov, backbone: Backbone, spec: ExtractorSpec, cache_dir: str):
    """Return (the saved fp32 model, read once; the Keras FeatureModel if it was converted now, else None)."""
    path = converted_path(cache_dir, spec)
    saved = _usable(ov, path)
    if saved is not None:
        return saved, None
    from bneck.features.backbones.feature_model import FeatureModel

    reference = FeatureModel(backbone, spec)
    _save(ov, ov.convert_model(reference.forward_function()), path)
    return _ModelBytes(path), reference


class OpenVINOFeatureModel:
    """Callable uint8 batch -> features, like ``model.FeatureModel``, on OpenVINO's CPU plugin.

    ``sample()`` (uint8 images of this run) is what an fp32 model not yet checked by this
    user on this machine is compared with TensorFlow on; ``plan`` calibrates an int8
    model and holds the images it is checked on. ``converted`` and ``quantized`` say
    whether this instance had to convert or quantise; ``equivalence`` is the fp32 check
    and ``quantization_stats`` the int8 one. Raises RuntimeMismatch for an fp32 model
    whose features differ from TensorFlow's beyond the tolerance.
    """

    def __init__(
        self,
        backbone: Backbone,
        spec: ExtractorSpec,
        cache_dir: str,
        plan: CalibrationPlan | None = None,
        workers: int = 0,
        sample: Callable[[], np.ndarray] | None = None,
        verbose: bool = True,
    ):
        from bneck.features.runtimes import openvino_compile

        ov = import_openvino()
        self.spec, self.backbone, self.cache_dir = spec, backbone, cache_dir
        self.inference_precision = openvino_compile.INFERENCE_PRECISION
        self.quantized, self.quantization_stats = False, None
        fp32_spec = dataclasses.replace(spec, quantization=None)
        fp32, self._reference = _fp32_graph(ov, backbone, fp32_spec, cache_dir)
        self.converted = self._reference is not None
        self.equivalence = self._checked_fp32(ov, fp32, fp32_spec, sample)
        model = fp32
        if reduced_precision(spec) == "bf16":  # the fp32 model, computed in bf16
            self.inference_precision = "bf16"
            self.quantization_stats = self._checked_reduced(BF16_CHECK, ov, fp32, fp32, plan, workers)
        elif spec.quantization is not None:
            path = converted_path(cache_dir, spec, "int8")
            model = _usable(ov, path, int8=True)
            if model is None:  # none, damaged, or not quantised at all
                _save(ov, quantize(ov, fp32.read(ov), plan, spec.input_size, workers, verbose), path)
                self.quantized = True
                model = _ModelBytes(path)
            self.quantization_stats = self._checked_reduced(INT8_CHECK, ov, fp32, model, plan, workers)
        self._compiled = compile_cpu(ov, model.read(ov), self.inference_precision)
        self.output_shape = tuple(int(d) for d in self._compiled.output(0).get_partial_shape()[1:].to_shape())
        self.version = ov.get_version()
        self.calls = 0
        self.images = 0

    def _where(self) -> str:
        return where_checked(self.inference_precision)

    def _checked_fp32(self, ov, fp32: _ModelBytes, spec: ExtractorSpec, sample) -> dict:
        """Return this user's check of these fp32 bytes here, making it against TensorFlow if needed."""
        from bneck.features.runtimes import trust
        from bneck.features.runtimes.equivalence import (
            CHECK_TOLERANCE,
            TOLERANCE,
            RuntimeMismatch,
            max_relative_difference,
        )

        check = trust.recorded(FP32_CHECK, fp32.sha256, self._where(), FP32_NUMBERS)
        if check is None:
            sample = sample() if sample is not None else None
            if sample is None or not len(sample):
                raise RuntimeMismatch(
                    f"the OpenVINO model of extractor {spec.key[:12]} has not been checked against "
                    "TensorFlow on this machine, and no images were given to check it on."
                )
            if self._reference is None:
                from bneck.features.backbones.feature_model import FeatureModel

                self._reference = FeatureModel(self.backbone, spec)
            compiled = compile_cpu(ov, fp32.read(ov), self.inference_precision)
            got = np.asarray(compiled(sample), dtype=spec.dtype)
            diff = max_relative_difference(got, self._reference(sample))
            check = {
                "runtime": "openvino",
                "reference": "tensorflow",
                "max_rel_diff": diff,
                "images": int(len(sample)),
                "tolerance": CHECK_TOLERANCE,
                "key_tolerance": TOLERANCE,
                "where": self._where(),
                "model_sha256": fp32.sha256,
                # both already ran once on the sample: these are the second runs, without set-up
                "seconds": _seconds(lambda: compiled(sample)),
                "reference_seconds": _seconds(lambda: self._reference(sample)),
            }
            check["passed"] = fp32_trusted(check)
            trust.record(FP32_CHECK, fp32.sha256, self._where(), check)
        check = dict(check, passed=fp32_trusted(check))  # a recorded one too: from the number, never its flag
        if not check["passed"]:
            raise RuntimeMismatch(
                f"OpenVINO on this machine ({self._where()}) gives features that differ from TensorFlow's by "
                f"{check['max_rel_diff']:.2e} relative on the images it was checked on, more than the "
                f"{CHECK_TOLERANCE:g} a runtime may show on its check sample to share TensorFlow's cache key (rows "
                f"under one key may differ by {TOLERANCE:g} on any image). Nothing was computed with it. "
                f"Use --runtime tensorflow (the converted model is {converted_path(self.cache_dir, spec)})."
            )
        return check

    def _checked_reduced(self, kind: str, ov, fp32: _ModelBytes, reduced: _ModelBytes, plan, workers: int) -> dict:
        """Return this user's cosine check of an int8 model (or of the fp32 one computed in bf16) against
        the checked fp32 one, making it if needed."""
        from bneck.features.runtimes import trust

        where = where_checked("bf16" if kind == BF16_CHECK else INFERENCE_PRECISION)
        # a verdict on these bytes against THIS fp32 model: the same int8 file measured against another
        # extractor's fp32 model (another key) says nothing about this one
        compared = f"{reduced.sha256} against {fp32.sha256}"
        stats = trust.recorded(kind, compared, where, ("cosine_min", "cosine_mean", "check_images"))
        if stats is None:
            if plan is None:
                raise ConfigError(
                    f"the {kind.split()[0]} model of extractor {self.spec.key[:12]} has not been checked "
                    "on this machine, and no held-back images were given to check it on."
                )
            stats = (
                bf16_cosine_check(ov, fp32.read(ov), plan, self.spec.input_size, workers)
                if kind == BF16_CHECK
                else cosine_check(ov, fp32.read(ov), reduced.read(ov), plan, self.spec.input_size, workers)
            )
            trust.record(kind, compared, where, stats)
        return stats

    def warm_up(self) -> None:
        """Run one blank image (not counted), so the first batch does not pay for set-up."""
        size = self.spec.input_size
        self._compiled(np.zeros((1, size, size, 3), np.uint8))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Return features for a (n, size, size, 3) uint8 batch."""
        self.calls += 1
        self.images += len(images)
        return np.asarray(self._compiled(images), dtype=self.spec.dtype)


def _seconds(run, repeats: int = 3) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by whatever else the CPU does)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def checked_here(spec: ExtractorSpec, cache_dir: str) -> bool:
    """Whether ``spec``'s converted fp32 model is in the cache and this user checked exactly those bytes
    against TensorFlow on this CPU class (and it passed): then it runs without building TensorFlow."""
    from bneck.features.runtimes import trust

    path = converted_path(cache_dir, spec)
    if not os.path.isfile(path) or not os.path.isfile(path[:-4] + ".bin"):
        return False
    try:
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return False
        check = trust.recorded(FP32_CHECK, _ModelBytes(path).sha256, where_checked(), FP32_NUMBERS)
    except (OSError, ValueError, BneckError):
        return False
    return check is not None and fp32_trusted(check)


# From this many images in a data set, `--runtime auto` converts to OpenVINO (about 5 s once for
# MobileNet, repaid at about 2 ms an image; docs "Which runtime").
AUTO_CONVERT_IMAGES = 2000


def _build(spec: ExtractorSpec, context) -> OpenVINOFeatureModel:
    from bneck.features.backbones.model_file import backbone_for

    return OpenVINOFeatureModel(
        backbone_for(spec),
        spec,
        context.cache_dir,
        context.plan,
        context.workers,
        sample=context.sample,
        verbose=context.verbose,
    )


def _check_precision(precision: str) -> None:
    """Refuse bf16 on a CPU without native bf16 (emulated, it is slower than fp32 and no cheaper)."""
    from bneck.features.runtimes import cpu

    if precision == "bf16" and not cpu.has_native_bf16():
        raise ConfigError(
            "--precision bf16 needs a CPU that computes bf16 natively (flag avx512_bf16 or amx_bf16 in "
            f"/proc/cpuinfo); this one has {', '.join(cpu.relevant()) or 'none of the relevant flags'}. Use "
            "--precision fp32 (the default), or int8 on CPUs with VNNI (`bneck backbones` shows what this CPU "
            "supports). Received: precision='bf16'."
        )


OPENVINO = register_runtime(
    Runtime(
        name="openvino",
        label="OpenVINO",
        build=_build,
        precisions=("fp32", "int8", "bf16"),
        checks_itself=True,
        modules=("openvino",),
        precision_modules={"int8": ("nncf",)},
        install='pip install -e ".[openvino]"',
        package="openvino",
        check_precision=_check_precision,
        ready_here=checked_here,
        ready_why="its converted model is cached and was checked against TensorFlow on this CPU",
        not_ready_why=(
            "no converted model checked on this CPU in the cache (`bneck extract --runtime openvino` makes one)"
        ),
        auto_from_images=AUTO_CONVERT_IMAGES,
        first_use="converted and checked against TensorFlow on first use",
    )
)
