"""The deployable model: raw uint8 RGB images in, class probabilities out, one Keras graph.

Inside, in order: the backbone's preprocessing written as built-in layers (so the
model loads without bneck or a Lambda), the recorded conv base cut at the recorded
layer and pooled as recorded, then the head: a Keras head, a fine-tuned model's
own, or a scikit-learn model folded into layers (``fold``). A single sigmoid output
becomes the two probabilities ``[1 - p, p]``, as ``bneck predict`` reports them.
"""

from __future__ import annotations

import numpy as np

from bneck.features import backbone_for
from bneck.features.backbones.feature_model import build_base, cut_model
from bneck.features.backbones.model_file import preprocessing_entry
from bneck.pipeline.artifacts import LoadedClassifier
from bneck.pipeline.export.fold import describe, refusal, sklearn_layers

# keras.applications' caffe-style preprocess_input: RGB -> BGR, then minus these BGR means
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# and its torch-style one: scaled to [0, 1], then these RGB means and deviations
_TORCH_MEAN_RGB, _TORCH_STD_RGB = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocessing(keras, backbone, x):
    """Return ``backbone.preprocess_input`` applied to the float tensor ``x``, as built-in layers."""
    mode = backbone.preprocessing.split(":")[0]
    if mode == "tf":  # x / 127.5 - 1
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_tf")(x)
    if mode == "caffe":  # a 1x1 convolution that swaps R and B (weights 0 and 1) and adds -mean: exact
        layer = keras.layers.Conv2D(3, 1, name="preprocess_caffe")
        layer.build((None, None, None, 3))
        swap = np.zeros((1, 1, 3, 3), np.float32)
        for out_channel, in_channel in enumerate((2, 1, 0)):
            swap[0, 0, in_channel, out_channel] = 1.0
        layer.set_weights([swap, -np.asarray(_CAFFE_MEAN_BGR, np.float32)])
        return layer(x)
    if mode == "torch":  # (x / 255 - mean) / std, as one Normalization of x (DenseNet)
        mean, std = np.asarray(_TORCH_MEAN_RGB) * 255, np.asarray(_TORCH_STD_RGB) * 255
        return keras.layers.Normalization(mean=mean, variance=std**2, name="preprocess_torch")(x)
    if mode == "none outside the model":  # EfficientNet: its rescaling is a layer of the base
        return x
    raise ValueError(f"no exported preprocessing for {backbone.name} ({backbone.preprocessing})")


def _as_probabilities(keras, y):
    if y.shape[-1] == 1:  # sigmoid p -> [1 - p, p]
        return keras.layers.Concatenate(name="probabilities")(
            [keras.layers.Rescaling(-1.0, offset=1.0, name="one_minus_p")(y), y]
        )
    return y


def _folded(clf: LoadedClassifier, features):
    """Return the probabilities of a scikit-learn model folded by its classifier's registry entry.
    Raises FoldError for a classifier that does not fold (or is not registered here)."""
    from bneck.pipeline.training.classifiers import exact_exports, list_classifiers

    entry = {e.name: e for e in list_classifiers("sklearn")}.get(clf.manifest.classifier)
    if entry is None or entry.fold is None:
        model = clf.model
        final = model.steps[-1][1] if hasattr(model, "steps") else getattr(model, "model_", model)
        raise refusal(f"{clf.manifest.classifier} ({describe(final)})", exact_exports())
    return sklearn_layers(clf.model, features, len(clf.class_names), entry.fold, exact_exports())


def deployable(clf: LoadedClassifier, spec):
    """Return the Keras model uint8 (N, S, S, 3) RGB -> (N, C) probabilities for a loaded model (an
    ensemble: one base for the members over its features, a branch per fine-tuned member, the members'
    probabilities averaged with their weights). Raises FoldError for a model, or members, not layers."""
    from bneck.core.tfimport import import_tensorflow

    import_tensorflow()  # quietly, and with Keras' settings at bneck's: a folded scikit-learn model is built first
    import keras

    members = [(n, m, w) for n, m, w in clf.model.members] if clf.kind == "ensemble" else [("", clf, 1)]
    _check_members_fold(clf, members)
    needs_base = any(m.kind != "finetuned" for _, m, _ in members)
    backbone = backbone_for(spec) if needs_base else preprocessing_entry(spec)
    size = spec.input_size
    images = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0, name="to_float")(images)  # uint8 -> float32, values unchanged
    x = preprocessing(keras, backbone, x)
    features = cut_model(build_base(backbone, spec), backbone, spec.layer, spec.pool)(x) if needs_base else None
    if clf.kind != "ensemble":
        return keras.Model(images, _output(keras, clf, x, features), name="bneck_model")
    total = float(sum(w for _, _, w in members))
    parts = []
    for i, (_, member, weight) in enumerate(members):  # each member its own sub-model: no two layer names meet
        source = x if member.kind == "finetuned" else features
        inputs = keras.Input(tuple(source.shape[1:]), name=f"member_{i}_input")
        branch = keras.Model(inputs, _output(keras, member, inputs, inputs), name=f"member_{i}")
        parts.append(keras.layers.Rescaling(weight / total, name=f"member_{i}_weight")(branch(source)))
    y = keras.layers.Add(name="probabilities")(parts) if len(parts) > 1 else parts[0]
    return keras.Model(images, y, name="bneck_model")


def _output(keras, clf: LoadedClassifier, preprocessed, features):
    """One model's probabilities: a fine-tuned model on the preprocessed images, a head or a folded
    scikit-learn model on the features."""
    if clf.kind == "finetuned":
        return _as_probabilities(keras, clf.model(preprocessed, training=False))
    if clf.kind == "keras":
        return _as_probabilities(keras, clf.model(features, training=False))
    return _folded(clf, features)


def _check_members_fold(clf: LoadedClassifier, members: list) -> None:
    """Refuse, before anything is built, an ensemble with members that are not layers, naming each."""
    from bneck.pipeline.export.fold import FoldError
    from bneck.pipeline.training.classifiers import exact_exports, list_classifiers

    if clf.kind != "ensemble":
        return
    folds = {e.name for e in list_classifiers("sklearn") if e.fold is not None}
    refused = [
        name if name == m.manifest.classifier else f"{name} ({m.manifest.classifier})"
        for name, m, _ in members
        if m.kind == "sklearn" and m.manifest.classifier not in folds
    ]
    if refused:
        raise FoldError(
            f"this ensemble cannot be exported as one graph: its member(s) {', '.join(refused)} are not "
            f"expressible as neural-network layers without approximating them (models that export exactly: "
            f"{exact_exports()}, and fine-tuned models). Make an ensemble of exportable models "
            "(`bneck ensemble MODEL_DIR... --out DIR` without those folders) and export it, or keep this one "
            "inside bneck (`bneck predict`).",
            ", ".join(refused),
        )
