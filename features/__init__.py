"""bneck stage 1: bottleneck features, extracted once and cached by content.

Public API::

    from bneck import extract, read_features
    report = extract("data/cats_and_dogs_small", "features_out", backbone="mobilenet",
                     alpha=0.25, size=224, weights="imagenet")
    train = read_features("features_out/train.h5")
"""

from bneck.core.errors import BneckError, ConfigError, DatasetError, FeatureFileError, WeightsError
from bneck.features.backbones.model_file import backbone_for, preprocess_for
from bneck.features.backbones.registry import BACKBONES, get_backbone
from bneck.features.backbones.resolve import resolve_spec
from bneck.features.backbones.spec import SCHEMA_VERSION, ExtractorSpec
from bneck.features.extraction.report import ExtractionReport, SplitReport
from bneck.features.extraction.stage import extract
from bneck.features.featurefile.format import FeatureFile, read_features, read_summary

__all__ = [
    "BACKBONES",
    "BneckError",
    "ConfigError",
    "DatasetError",
    "ExtractionReport",
    "ExtractorSpec",
    "FeatureFile",
    "FeatureFileError",
    "SCHEMA_VERSION",
    "SplitReport",
    "WeightsError",
    "backbone_for",
    "extract",
    "get_backbone",
    "preprocess_for",
    "read_features",
    "read_summary",
    "resolve_spec",
]
