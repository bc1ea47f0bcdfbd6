"""The reference runtime: TensorFlow running the Keras feature model (``backbones.feature_model``).

Every other runtime is checked against its numbers before its first row, and every
export is compared with it.
"""

from __future__ import annotations

from bneck.features.backbones.model_file import backbone_for
from bneck.features.runtimes.registry import BuildContext, Runtime, register_runtime


def build(spec, context: BuildContext):
    """Return TensorFlow's FeatureModel of ``spec`` (``context`` is not needed: nothing is converted)."""
    from bneck.features.backbones.feature_model import FeatureModel

    return FeatureModel(backbone_for(spec), spec)


TENSORFLOW = register_runtime(
    Runtime(
        name="tensorflow",
        label="TensorFlow",
        build=build,
        reference=True,
        modules=("tensorflow",),
        install='pip install -e "."',
        package="tensorflow",
    )
)
