"""Stage 3's model: the recorded conv base, its top unfrozen, the trained head on top.

The rules from the reference, each enforced here:

* the base is rebuilt from what the head's manifest recorded (backbone, weights by
  sha256, size, preprocessing, layer, pool), never re-specified by hand;
* the head must have been trained (random heads wreck pretrained weights) and its
  input must match the base's output at the recorded layer and pool;
* everything below the unfreeze point stays frozen, and BatchNormalization layers
  are frozen everywhere (so they run in inference mode) besides the base being
  called with ``training=False``;
* augmentation is not part of the model: the training loop applies it to training
  batches only, so validation and test images are never augmented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bneck.core.errors import BneckError
from bneck.features import ConfigError, ExtractorSpec, backbone_for
from bneck.pipeline.artifacts import LoadedClassifier


class HeadError(BneckError):
    """The head cannot go on this base: untrained, not a Keras head, or the wrong shape."""


@dataclass
class FinetuneModel:
    """The assembled model (preprocessed image -> probabilities), its augmentation, what was unfrozen."""

    model: Any  # keras.Model
    feature_model: Any  # keras.Model
    spec: ExtractorSpec
    unfreeze_from: str | None
    trainable_layers: list[str]
    frozen_layers: list[str]
    head: object = None
    # Applied to training batches only, outside the model: validation, test and the
    # saved model never see it (and Keras' RandomShear could not be reloaded from its
    # own saved config anyway: it writes a negative factor its constructor rejects).
    augmentation: object | None = None


def unfreeze_index(model, backbone, unfreeze_from: str | None) -> int | None:
    """Return the index in ``model.layers`` (the cut feature model) of the first trainable layer, or
    None for a fully frozen base.

    ``unfreeze_from`` is a layer name, 'none', 'last-block' (the reference recipe's point) or
    None/'default' for the backbone's default. When the features were cut below the backbone's
    named point (``--layer``), 'default' and 'last-block' are found the same way in the graph of the
    cut model. Raises ConfigError naming the allowed values.
    """
    if unfreeze_from == "none":
        return None
    named = {None: backbone.unfreeze_from, "default": backbone.unfreeze_from, "last-block": backbone.last_block}
    point = named.get(unfreeze_from, unfreeze_from)
    names = [layer.name for layer in model.layers]
    if point not in names and unfreeze_from in named:
        from bneck.features.backbones.graph import unfreeze_points

        found, _ = unfreeze_points(model, int(model.inputs[0].shape[1] or 224))
        point = found[0] if found else point
    if point not in names:
        raise ConfigError(
            f"--unfreeze-from must be 'none', 'default' ({backbone.unfreeze_from} for {backbone.label}), "
            f"'last-block' ({backbone.last_block}) or a layer of the feature model, e.g. {', '.join(names[-6:])}. "
            f"Received: unfreeze_from={unfreeze_from!r}."
        )
    return names.index(point)


def build_finetune_model(
    head: LoadedClassifier,
    unfreeze_from: str | None,
    augment: dict,
    seed: int,
    allow_untrained_head: bool = False,
    weights: str | None = None,
) -> FinetuneModel:
    """Assemble base(training=False) -> trained head and the augmentation; freeze below the point.

    Raises HeadError for a non-Keras, untrained or mismatched head, WeightsError when
    the recorded weights cannot be found, ConfigError for a bad unfreeze point.
    """
    from bneck.core.tfimport import import_tensorflow
    from bneck.features.backbones.feature_model import build_base, cut_model

    import_tensorflow()
    import keras

    from bneck.pipeline.finetuning.augment import augmentation_layer

    _check_head_is_trained_keras(head, allow_untrained_head)
    spec = head.manifest.extractor_spec(weights)
    backbone = backbone_for(spec)
    feature_model = cut_model(build_base(backbone, spec), backbone, spec.layer, spec.pool)
    _check_head_fits_features(head, spec, feature_model)
    start = unfreeze_index(feature_model, backbone, unfreeze_from)
    trainable, frozen = _freeze_below(feature_model, start)
    augmentation = augmentation_layer(augment, seed)
    image = keras.Input(shape=(spec.input_size, spec.input_size, 3), name="preprocessed_image")
    # training=False: BatchNormalization keeps its moving statistics (inference mode)
    # even for unfrozen layers, as the Keras transfer-learning guide requires.
    features = feature_model(image, training=False)
    model = keras.Model(image, head.model(features), name="bneck_finetuned")
    point = None if start is None else feature_model.layers[start].name
    return FinetuneModel(model, feature_model, spec, point, trainable, frozen, head.model, augmentation)


def _check_head_is_trained_keras(head: LoadedClassifier, allow_untrained_head: bool) -> None:
    """Raise HeadError unless ``head`` is a Keras head that was trained (or an untrained one is allowed)."""
    manifest = head.manifest
    if head.kind != "keras":
        what = "scikit-learn" if head.kind == "sklearn" else "fine-tuned"
        raise HeadError(
            f"{head.folder} holds a {manifest.classifier!r} {what} model; "
            "fine-tuning needs a Keras head (dense or gap-dense) from `bneck train`."
        )
    if not manifest.trained and not allow_untrained_head:
        raise HeadError(
            f"{head.folder} holds a head that was never trained. A random head on a "
            "base being fine-tuned sends large gradients into the pretrained weights "
            "and wrecks them; train it first with `bneck train`, or pass "
            "--allow-untrained-head if you really mean it."
        )


def _check_head_fits_features(head: LoadedClassifier, spec: ExtractorSpec, feature_model) -> None:
    """Raise HeadError when the head's input shape is not the feature model's output shape."""
    produced = tuple(feature_model.output.shape[1:])
    expected = tuple(head.model.input_shape[1:])
    if produced != expected:
        raise HeadError(
            f"the head in {head.folder} takes inputs of shape {expected}, but "
            f"{spec.backbone} at size {spec.input_size}, layer {spec.layer}, pool "
            f"{spec.pool} produces {produced}. Train the head on features from the "
            "same extractor."
        )


def _freeze_below(feature_model, start: int | None) -> tuple[list[str], list[str]]:
    """Make the layers from ``start`` up trainable (BatchNormalization never), the rest frozen; return
    the names of the layers that hold weights as (trainable, frozen)."""
    import keras  # already imported, after import_tensorflow(), by build_finetune_model

    trainable, frozen = [], []  # layers that hold weights, by fate
    for i, layer in enumerate(feature_model.layers):
        # BatchNormalization stays frozen: in Keras 3 the outer fit's training=True reaches
        # nested models despite training=False at the call (measured here: the moving
        # statistics changed), and a frozen BN layer always runs in inference mode.
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = start is not None and i >= start and not is_bn
        if layer.weights:
            (trainable if layer.trainable else frozen).append(layer.name)
    return trainable, frozen


@dataclass
class FrozenSplit:
    """The model cut at the unfreeze point: trunk (frozen, cached) and top (trained)."""

    trunk: object  # preprocessed image -> output of the last frozen layer
    top: object  # that output -> class probabilities (unfrozen layers + head)
    layer: str  # the last frozen layer, as a stage-1 cut point
    pool: str


def frozen_split(ft: FinetuneModel) -> FrozenSplit:
    """Split ``ft`` where the frozen part ends, sharing its layers and weights.

    With a frozen base (--unfreeze-from none) the trunk is the whole feature model and
    the top is the head. Raises ConfigError when the unfrozen layers also read tensors
    from below the unfreeze point (no single tensor to cache).
    """
    import keras

    from bneck.features.backbones.graph import single_input

    fm = ft.feature_model
    if ft.unfreeze_from is None:
        cut = keras.Input(shape=fm.output.shape[1:], name="frozen_output")
        return FrozenSplit(fm, keras.Model(cut, ft.head(cut), name="bneck_top"), ft.spec.layer, ft.spec.pool)
    first = fm.get_layer(ft.unfreeze_from)
    tensor = first.input
    problem = isinstance(tensor, (list, tuple)) or fm.layers.index(first) == 0
    if not problem:
        try:
            upper = keras.Model(tensor, fm.output)
        except ValueError:  # the top needs more than this tensor (a skip connection from below)
            problem = True
    if problem:
        raise ConfigError(
            f"--cache-frozen needs the layers from --unfreeze-from {ft.unfreeze_from} up to read "
            "only the output of the layer just below it, but in this backbone they also read "
            "earlier tensors. Choose an unfreeze point at the start of a block (the default "
            "is one), or fine-tune without --cache-frozen."
        )
    cut = keras.Input(shape=tensor.shape[1:], name="frozen_output")
    top = keras.Model(cut, ft.head(upper(cut, training=False)), name="bneck_top")
    return FrozenSplit(keras.Model(single_input(fm), tensor), top, tensor._keras_history[0].name, "none")
