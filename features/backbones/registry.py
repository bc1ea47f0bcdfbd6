"""The backbone registry: one entry per ``keras.applications`` constructor, and the user's own models.

Each entry holds everything a stage needs to know about a backbone: how to build it,
its own ``preprocess_input``, its default input size and feature layer, its named cut
points, its unfreeze points and the official ImageNet weights file. No stage
re-implements preprocessing; they all ask the entry (keras ``applications/*.py``, timm
``pretrained_cfg``).

The entries come from ``catalog.json``, which ``scripts/backbone_catalog.py`` derives
from the installed Keras (``discover``): nothing in it is typed by hand. What is typed
here is what was chosen or measured, each with its reason (``_CHOSEN``), and the
published top-1 (``published``). A constructor the catalog lacks (one a later Keras
adds) becomes an entry on first use.

This module imports no TensorFlow: a cache hit never pays for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from bneck.core.errors import ConfigError, choice_error
from bneck.features.backbones.catalog import catalog, catalog_keras_version
from bneck.features.backbones.published import TOP1

_MOBILENET_ALPHA_TEXT = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}


def _mobilenet_file(alpha: float | None, size: int) -> str:
    rows = size if size in (128, 160, 192, 224) else 224
    return f"mobilenet_{_MOBILENET_ALPHA_TEXT[alpha or 1.0]}_{rows}_tf_no_top.h5"


def _mobilenetv2_file(alpha: float | None, size: int) -> str:
    rows = size if size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha or 1.0)}_{rows}_no_top.h5"


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
    weights_file: Callable[[float | None, int], str | None]
    weights_origin: str  # the URL of the default file, or a folder URL ending in "/" for per-alpha files
    # The starts of the last two stages, found from the graph: the first is the "last block".
    unfreeze_points: tuple[str, ...] = ()
    # Whether the layers above each unfreeze point read only the tensor below it, so stage 3
    # can cache that tensor (--cache-frozen); False for NASNet, whose cells read two back.
    unfreeze_splits: bool = True
    # Stage 3's default unfreeze point where one was measured (docs/stages.md):
    # MobileNet and MobileNetV2 from the start of their 14x14 stage; else the last block.
    measured_unfreeze_from: str = ""
    # Whether stage 3 compiles its training step with XLA. Measured here (2-core
    # AVX-512 CPU, batch 16): XLA made VGG16's forward+backward 11% (whole net) to 29%
    # (block 5 alone) faster, and MobileNet's 2-5x slower (depthwise convolutions).
    # Off unless measured to help.
    xla: bool = False
    alphas: tuple[float, ...] = ()
    default_alpha: float | None = None
    # The hash Keras publishes for the no-top ImageNet file (``file_hash``: an md5, or a sha256
    # for ConvNeXt); MobileNet v1/v2 files have none.
    weights_md5: str | None = None
    top1: float | None = None
    parameters: int = 0
    multiply_adds: int = 0
    family: str = ""  # the keras.applications module it comes from (``module`` may differ: resnet50)
    max_size: int = MAX_SIZE  # a model file with a fixed input side takes that side only

    # The last block's first layer where one was chosen by hand (the backbones of 0.2: the reference
    # recipe's point, from which the fine-tuning benchmarks ran); else the graph's last stage start.
    chosen_last_block: str = ""

    @property
    def label(self) -> str:
        """How messages name it: its name (a model file: the file's name)."""
        return self.name

    @property
    def last_block(self) -> str:
        """``--unfreeze-from last-block``: the chosen last block, else the start of the last stage."""
        return self.chosen_last_block or (self.unfreeze_points[0] if self.unfreeze_points else self.default_layer)

    @property
    def unfreeze_from(self) -> str:
        """Stage 3's default unfreeze point."""
        return self.measured_unfreeze_from or self.last_block

    def weights_url(self, file_name: str) -> str:
        """Where Keras downloads ``file_name`` from."""
        return self.weights_origin + file_name if self.weights_origin.endswith("/") else self.weights_origin

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
        if not isinstance(size, int) or isinstance(size, bool) or not self.min_size <= size <= self.max_size:
            sizes = f"from {self.min_size} to {self.max_size} pixels (default {self.default_size})"
            if self.min_size == self.max_size:
                sizes = f"{self.min_size} pixels (its input side is fixed)"
            raise ConfigError(f"input size for {self.label} must be an integer {sizes}. Received: size={size!r}.")
        return size

    def preprocess_fn(self):
        """Return the backbone's own ``keras.applications.<module>.preprocess_input``."""
        return importlib.import_module(f"keras.applications.{self.module}").preprocess_input

    def build(self, weights, size: int, alpha: float | None):
        """Build the conv base (include_top=False) with ``weights`` (None, 'imagenet' or a path).

        Keras' automatic layer names (``activation_17``) are counted from zero for every
        build, so a layer name means the same layer in every process (it is part of keys).
        """
        import keras

        from bneck.features.backbones.graph import fresh_layer_names

        # The input is named here: left to Keras, the second model a process builds gets
        # 'input_layer_1', and `--layer input_layer` would depend on what was built before.
        kwargs = {
            "include_top": False,
            "weights": weights,
            "input_tensor": keras.Input((size, size, 3), name="input_layer"),
        }
        if alpha is not None:
            kwargs["alpha"] = alpha
        with fresh_layer_names():
            return getattr(keras.applications, self.constructor)(**kwargs)


# What is chosen or measured rather than derived, and why. Keys of files written by bneck 0.2
# hold these backbones' module and default size: changing them would orphan every cached row.
# The backbones of 0.2 keep their last block (docs/finetune.md): the reference recipe's point.
_CHOSEN: dict[str, dict] = {
    # The reference recipe (Chollet, "Deep Learning with Python", ch. 5) extracts VGG16 at 150 px.
    "vgg16": dict(default_size=150, xla=True, chosen_last_block="block5_conv1"),
    "vgg19": dict(default_size=150, xla=True, chosen_last_block="block5_conv1"),
    # 0.2 recorded keras.applications.resnet50.preprocess_input (the same function as resnet's).
    "resnet50": dict(module="resnet50", chosen_last_block="conv5_block3_1_conv"),
    "inceptionv3": dict(chosen_last_block="conv2d_80"),  # the first layer after mixed8
    "xception": dict(chosen_last_block="block14_sepconv1"),
    "efficientnetb0": dict(chosen_last_block="block7a_expand_conv"),
    "mobilenet": dict(
        alphas=(0.25, 0.5, 0.75, 1.0),
        default_alpha=1.0,
        weights_file=_mobilenet_file,
        measured_unfreeze_from="conv_pad_6",
        chosen_last_block="conv_dw_13",
    ),
    "mobilenetv2": dict(
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        default_alpha=1.0,
        weights_file=_mobilenetv2_file,
        measured_unfreeze_from="block_6_expand",
        chosen_last_block="block_16_expand",
    ),
}


def entry_from_record(name: str, record: dict) -> Backbone:
    """The registry entry for a catalog record, with what ``_CHOSEN`` says for it."""
    weights = record.get("weights") or {}
    file_name = weights.get("file")
    origin = weights.get("origin") or ""
    if name in ("mobilenet", "mobilenetv2"):
        origin = origin.rsplit("/", 1)[0] + "/"
    entry = Backbone(
        name=name,
        constructor=record["constructor"],
        module=record["module"],
        preprocessing=record["preprocessing"],
        default_size=record["default_size"],
        min_size=record["min_size"],
        default_layer=record["default_layer"],
        cut_points=tuple(record["cut_points"]),
        unfreeze_points=tuple(record["unfreeze_points"]),
        unfreeze_splits=record.get("unfreeze_splits", True),
        weights_file=lambda alpha, size: file_name,
        weights_origin=origin,
        weights_md5=weights.get("md5"),
        top1=TOP1.get(name),
        parameters=record["parameters"],
        multiply_adds=record["multiply_adds"],
        family=record["module"],
    )
    entry = replace(entry, **_CHOSEN.get(name, {}))
    # The graph was counted at Keras' default size: convolutions' cost goes with the positions.
    scale = (entry.default_size / record["default_size"]) ** 2
    return replace(entry, multiply_adds=round(record["multiply_adds"] * scale))


BACKBONES: dict[str, Backbone] = {name: entry_from_record(name, record) for name, record in catalog().items()}


def get_backbone(name: str) -> Backbone:
    """Return the registry entry for ``name``; raises ConfigError listing the known ones.

    A ``keras.applications`` constructor the catalog lacks (a later Keras) is derived now.
    """
    key = str(name).lower()
    if key not in BACKBONES:
        derived = _derive_new_constructor(key)
        if derived is None:
            raise choice_error("backbone", sorted(BACKBONES), name)
        BACKBONES[key] = derived
    return BACKBONES[key]


def _derive_new_constructor(key: str) -> Backbone | None:
    """The entry for a constructor of a Keras newer than the catalog's; None when there is none."""
    from importlib import metadata

    if metadata.version("keras") == catalog_keras_version():
        return None  # the catalog holds every constructor of this Keras: a typo, refused at once
    from bneck.features.backbones.discover import constructors, derive_record

    found = next((c for c in constructors() if c.lower() == key), None)
    return None if found is None else entry_from_record(key, derive_record(found))
