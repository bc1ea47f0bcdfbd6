"""The Keras heads, ``dense`` and ``gap-dense``: built and trained by ``bneck.pipeline.training.heads``."""

from __future__ import annotations

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier

register_classifier(
    Classifier(name="dense", kind="keras", description="Keras head: flatten, Dense(units, relu), dropout, output")
)
register_classifier(
    Classifier(name="gap-dense", kind="keras", description="Keras head: global average pooling, dropout, output")
)
