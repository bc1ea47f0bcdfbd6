"""bneck: transfer learning with bottleneck features on an ordinary CPU.

The whole public API lives under this one name::

    import bneck

    report = bneck.extract("data/photos", "feats", backbone="mobilenetv2", alpha=0.5, size=224,
                           weights="imagenet")
    board = bneck.train("feats", ["logreg", "gap-dense"], "models")
    names, rows = bneck.predict("models/logreg", ["new_photo.jpg"])

Stage 1 (``extract``, ``read_features``) lives in :mod:`bneck.features`; stages 2 and 3,
the whole run, export and the command line in :mod:`bneck.pipeline`. Names are imported
on first use, so ``import bneck`` is quick and imports neither TensorFlow nor scikit-learn.

Every error a user can meet is a :class:`BneckError`; :class:`ConfigError` (a value
outside its allowed set) is also a :class:`ValueError`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import bneck.core.tfimport  # noqa: F401 - sets KERAS_BACKEND=tensorflow before anything imports Keras
from bneck.core.errors import (
    BneckError,
    BneckWarning,
    ConfigError,
    DatasetError,
    FeatureFileError,
    StorageError,
    WeightsError,
)

# bneck reports through logging (loggers named bneck.*): silent until an application, or the
# command line, gives the "bneck" logger a handler.
logging.getLogger("bneck").addHandler(logging.NullHandler())

# Public name -> "module:attribute", imported on first use (PEP 562).
_LAZY = {
    "__version__": "bneck.pipeline:__version__",
    # stage 1
    "extract": "bneck.features.extraction.stage:extract",
    "read_features": "bneck.features.featurefile.format:read_features",
    "read_summary": "bneck.features.featurefile.format:read_summary",
    "FeatureFile": "bneck.features.featurefile.format:FeatureFile",
    "ExtractionReport": "bneck.features.extraction.report:ExtractionReport",
    "BACKBONES": "bneck.features.backbones.registry:BACKBONES",
    # stages 2 and 3, the run, using and exporting models
    "train": "bneck.pipeline.training.stage:train",
    "Leaderboard": "bneck.pipeline.training.leaderboard:Leaderboard",
    "finetune": "bneck.pipeline.finetuning.stage:finetune",
    "FinetuneResult": "bneck.pipeline.finetuning.stage:FinetuneResult",
    "run": "bneck.pipeline.runner.compose:run",
    "RunResult": "bneck.pipeline.runner.compose:RunResult",
    "ensemble": "bneck.pipeline.ensemble.build:make_ensemble",
    "EnsembleResult": "bneck.pipeline.ensemble.build:EnsembleResult",
    "predict": "bneck.pipeline.predict:classify",
    "evaluate": "bneck.pipeline.predict:evaluate",
    "export": "bneck.pipeline.export:export_model",
    # the rest of the error tree (all BneckError subclasses)
    "OutputError": "bneck.core.folders:OutputError",
    "RuntimeMismatch": "bneck.features.runtimes.equivalence:RuntimeMismatch",
    "QuantizationRefused": "bneck.features.runtimes.quantize:QuantizationRefused",
    "ShardError": "bneck.features.extraction.ray_engine:ShardError",
    "ArtifactError": "bneck.pipeline.manifests:ArtifactError",
    "ManifestError": "bneck.pipeline.manifests:ManifestError",
    "UnsafeModel": "bneck.features.backbones.keras_archive:UnsafeModel",
    "TrainingDiverged": "bneck.pipeline.training.fit:TrainingDiverged",
    "HeadError": "bneck.pipeline.finetuning.model:HeadError",
    "FoldError": "bneck.pipeline.export.fold:FoldError",
    "ExportError": "bneck.pipeline.export:ExportError",
    "EnsembleError": "bneck.pipeline.ensemble.members:EnsembleError",
}

# The functions whose errors are restated in keyword words (``run`` says config keys itself).
_STAGES = {"extract", "train", "finetune", "ensemble", "predict", "evaluate", "export", "read_features"}

__all__ = [
    "ArtifactError",
    "BACKBONES",
    "BneckError",
    "BneckWarning",
    "ConfigError",
    "DatasetError",
    "EnsembleError",
    "EnsembleResult",
    "ExportError",
    "ExtractionReport",
    "FeatureFile",
    "FeatureFileError",
    "FinetuneResult",
    "FoldError",
    "HeadError",
    "Leaderboard",
    "ManifestError",
    "OutputError",
    "QuantizationRefused",
    "RunResult",
    "RuntimeMismatch",
    "ShardError",
    "StorageError",
    "TrainingDiverged",
    "UnsafeModel",
    "WeightsError",
    "__version__",
    "ensemble",
    "evaluate",
    "export",
    "extract",
    "finetune",
    "predict",
    "read_features",
    "read_summary",
    "run",
    "train",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use; raises AttributeError for any other name."""
    if name not in _LAZY:
        raise AttributeError(f"module 'bneck' has no attribute {name!r}")
    module, _, attribute = _LAZY[name].partition(":")
    value = getattr(importlib.import_module(module), attribute)
    if name in _STAGES:  # errors met through the API name keyword arguments, not command-line flags
        from bneck.core.advice import api_entry

        value = api_entry(value)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
