"""The backbone registry: one entry per convolutional base.

Each entry holds everything a stage needs to know about a backbone: how to build
it, its own ``preprocess_input``, its default input size and feature layer, its
named cut points and the official ImageNet weights file. No stage re-implements
preprocessing; they all ask the entry (keras ``applications/*.py``, timm
``pretrained_cfg``).

This module imports no TensorFlow: a cache hit never pays for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from bneck.core.errors import ConfigError, choice_error

_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"

_MOBILENET_ALPHA_TEXT = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}


def _mobilenet_file(alpha: float, size: int) -> str:
    rows = size if size in (128, 160, 192, 224) else 224
    return f"mobilenet_{_MOBILENET_ALPHA_TEXT[alpha]}_{rows}_tf_no_top.h5"


def _mobilenetv2_file(alpha: float, size: int) -> str:
    rows = size if size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


# The largest input side bneck accepts: a batch of 32 RGB images at 1024 px is already 400 MB
# of floats before the first convolution; larger sizes only exhaust memory.
MAX_SIZE = 1024


@dataclass(frozen=True)
class Backbone:
    """A registry entry. ``weights_file(alpha, size)`` names the official no-top file."""

    name: str
    constructor: str  # attribute of keras.applications
    module: str  # keras.applications submodule holding preprocess_input
    preprocessing: str  # what preprocess_input does, recorded in files and keys
    default_size: int
    min_size: int
    default_layer: str
    cut_points: tuple[str, ...]
    weights_file: Callable[[float | None, int], str]
    weights_origin: str
    # The first layer of the last block: the reference recipe's unfreeze point
    # ("after:NAME" = the layer that follows NAME, for auto-named layers).
    last_block: str = ""
    # Stage 3's default unfreeze point where one was measured (README "Stage 3"):
    # MobileNet and MobileNetV2 from the start of their 14x14 stage; else the last block.
    measured_unfreeze_from: str = ""
    # Whether stage 3 compiles its training step with XLA. Measured here (2-core
    # AVX-512 CPU, batch 16): XLA made VGG16's forward+backward 11% (whole net) to 29%
    # (block 5 alone) faster, and MobileNet's 2-5x slower (depthwise convolutions).
    # Off unless measured to help.
    xla: bool = False
    alphas: tuple[float, ...] = ()
    default_alpha: float | None = None
    # The md5 Keras publishes for the no-top ImageNet file (keras/src/applications/*.py,
    # ``file_hash``); MobileNet v1/v2 files have none. Keras publishes no sha256.
    weights_md5: str | None = None

    @property
    def unfreeze_from(self) -> str:
        """Stage 3's default unfreeze point."""
        return self.measured_unfreeze_from or self.last_block

    def resolve_alpha(self, alpha: float | None) -> float | None:
        """Return the width multiplier to use; raises ConfigError for a bad one."""
        if not self.alphas:
            if alpha is not None:
                raise ConfigError(
                    f"--alpha applies only to backbones with a width multiplier "
                    f"({', '.join(b.name for b in BACKBONES.values() if b.alphas)}). "
                    f"Received: alpha={alpha!r} for backbone={self.name!r}."
                )
            return None
        if alpha is None:
            return self.default_alpha
        if float(alpha) not in self.alphas:
            raise choice_error(f"alpha for {self.name}", self.alphas, alpha)
        return float(alpha)

    def validate_size(self, size: int) -> int:
        """Return ``size`` if the backbone accepts it; raises ConfigError otherwise."""
        if not isinstance(size, int) or isinstance(size, bool) or not self.min_size <= size <= MAX_SIZE:
            raise ConfigError(
                f"input size for {self.name} must be an integer from {self.min_size} to {MAX_SIZE} "
                f"pixels (default {self.default_size}). Received: size={size!r}."
            )
        return size

    def preprocess_fn(self):
        """Return the backbone's own ``keras.applications.<module>.preprocess_input``."""
        return importlib.import_module(f"keras.applications.{self.module}").preprocess_input

    def build(self, weights, size: int, alpha: float | None):
        """Build the conv base (include_top=False) with ``weights`` (None, 'imagenet' or a path)."""
        import keras

        # The input is named here: left to Keras, the second model a process builds gets
        # 'input_layer_1', and `--layer input_layer` would depend on what was built before.
        kwargs = {
            "include_top": False,
            "weights": weights,
            "input_tensor": keras.Input((size, size, 3), name="input_layer"),
        }
        if alpha is not None:
            kwargs["alpha"] = alpha
        return getattr(keras.applications, self.constructor)(**kwargs)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            name="vgg16",
            weights_md5="6d6bbae143d832006294945121d1f1fc",
            last_block="block5_conv1",
            xla=True,
            constructor="VGG16",
            module="vgg16",
            preprocessing="caffe: RGB->BGR, ImageNet mean subtracted",
            default_size=150,
            min_size=32,
            default_layer="block5_pool",
            cut_points=("block3_pool", "block4_pool", "block5_pool"),
            weights_file=lambda a, s: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_origin=_ORIGIN + "vgg16/",
        ),
        Backbone(
            name="vgg19",
            weights_md5="253f8cb515780f3b799900260a226db6",
            last_block="block5_conv1",
            xla=True,
            constructor="VGG19",
            module="vgg19",
            preprocessing="caffe: RGB->BGR, ImageNet mean subtracted",
            default_size=150,
            min_size=32,
            default_layer="block5_pool",
            cut_points=("block3_pool", "block4_pool", "block5_pool"),
            weights_file=lambda a, s: "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_origin=_ORIGIN + "vgg19/",
        ),
        Backbone(
            name="resnet50",
            weights_md5="4d473c1dd8becc155b73f8504c6f6626",
            last_block="conv5_block3_1_conv",
            constructor="ResNet50",
            module="resnet50",
            preprocessing="caffe: RGB->BGR, ImageNet mean subtracted",
            default_size=224,
            min_size=32,
            default_layer="conv5_block3_out",
            cut_points=("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
            weights_file=lambda a, s: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_origin=_ORIGIN + "resnet/",
        ),
        Backbone(
            name="inceptionv3",
            weights_md5="bcbd6486424b2319ff4ef7d526e38f63",
            last_block="after:mixed8",
            constructor="InceptionV3",
            module="inception_v3",
            preprocessing="tf: scaled to [-1, 1]",
            default_size=299,
            min_size=75,
            default_layer="mixed10",
            cut_points=("mixed7", "mixed9", "mixed10"),
            weights_file=lambda a, s: "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_origin=_ORIGIN + "inception_v3/",
        ),
        Backbone(
            name="xception",
            weights_md5="b0042744bf5b25fce3cb969f33bebb97",
            last_block="block14_sepconv1",
            constructor="Xception",
            module="xception",
            preprocessing="tf: scaled to [-1, 1]",
            default_size=299,
            min_size=71,
            default_layer="block14_sepconv2_act",
            cut_points=("block13_pool", "block14_sepconv2_act"),
            weights_file=lambda a, s: "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_origin=_ORIGIN + "xception/",
        ),
        Backbone(
            name="mobilenet",
            last_block="conv_dw_13",
            measured_unfreeze_from="conv_pad_6",
            constructor="MobileNet",
            module="mobilenet",
            preprocessing="tf: scaled to [-1, 1]",
            default_size=224,
            min_size=32,
            default_layer="conv_pw_13_relu",
            cut_points=("conv_pw_11_relu", "conv_pw_12_relu", "conv_pw_13_relu"),
            weights_file=_mobilenet_file,
            weights_origin=_ORIGIN + "mobilenet/",
            alphas=(0.25, 0.5, 0.75, 1.0),
            default_alpha=1.0,
        ),
        Backbone(
            name="mobilenetv2",
            last_block="block_16_expand",
            measured_unfreeze_from="block_6_expand",
            constructor="MobileNetV2",
            module="mobilenet_v2",
            preprocessing="tf: scaled to [-1, 1]",
            default_size=224,
            min_size=32,
            default_layer="out_relu",
            cut_points=("block_13_expand_relu", "block_16_project_BN", "out_relu"),
            weights_file=_mobilenetv2_file,
            weights_origin=_ORIGIN + "mobilenet_v2/",
            alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
            default_alpha=1.0,
        ),
        Backbone(
            name="efficientnetb0",
            weights_md5="50bc09e76180e00e4465e1a485ddc09d",
            last_block="block7a_expand_conv",
            constructor="EfficientNetB0",
            module="efficientnet",
            preprocessing="none outside the model: rescaling and normalisation are layers of the model",
            default_size=224,
            min_size=32,
            default_layer="top_activation",
            cut_points=("block6a_expand_activation", "top_activation"),
            weights_file=lambda a, s: "efficientnetb0_notop.h5",
            weights_origin="https://storage.googleapis.com/keras-applications/",
        ),
    ]
}


def get_backbone(name: str) -> Backbone:
    """Return the registry entry for ``name``; raises ConfigError listing the known ones."""
    key = str(name).lower()
    if key not in BACKBONES:
        raise choice_error("backbone", sorted(BACKBONES), name)
    return BACKBONES[key]
