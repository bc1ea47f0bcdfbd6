"""The feature model: a backbone cut at a layer, optionally pooled, run as one compiled graph.

Preprocessing, inference and the output cast run inside one ``tf.function`` on uint8
batches (``model(x, training=False)``, not ``predict`` per batch, whose per-call
set-up dominates for small models). Counters record every image that went through
the network, which is how tests prove a cache hit costs zero forward passes.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np

from bneck.core.errors import ConfigError, WeightsError
from bneck.core.tfimport import import_tensorflow
from bneck.features.backbones.graph import single_input
from bneck.features.backbones.registry import Backbone
from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.backbones.weights import RANDOM_INIT_SEED


def build_base(backbone: Backbone, spec: ExtractorSpec):
    """Return the Keras conv base with the spec's weights; raises WeightsError if they do not fit."""
    import_tensorflow()
    import keras

    if spec.weights_path is None:
        keras.utils.set_random_seed(RANDOM_INIT_SEED)  # 'none' is a reproducible random init
    try:
        taken = _take_architecture(backbone, spec.input_size, spec.alpha) if spec.weights_path else None
        if taken is not None and backbone.constructor:
            _load_weights_whole(taken, spec.weights_path)  # what the constructor does with weights=PATH
            return taken
        if taken is not None:  # a model file: the architecture was loaded with its weights
            return taken
        return backbone.build(spec.weights_path, spec.input_size, spec.alpha)
    except (ValueError, OSError, KeyError) as exc:
        raise WeightsError(
            f"cannot load weights {spec.weights!r} ({spec.weights_path}) into backbone "
            f"{backbone.name!r}{f' alpha={spec.alpha}' if spec.alpha else ''} at size "
            f"{spec.input_size}: {str(exc).splitlines()[0]}. {_weights_advice(spec)}"
        ) from None


def _weights_advice(spec) -> str:
    """What to do about weights that do not load: the file 'imagenet' found is the culprit when it was given."""
    if spec.weights == "imagenet" and spec.weights_path:
        return (
            f"The file found for 'imagenet' at {spec.weights_path} is not this backbone's official file under its "
            "name: delete it (a file in bneck's weights folder was put there by `bneck weights add`), then add "
            "the right one, or pass --weights PATH."
        )
    return "--weights must be 'imagenet', 'none' or a no-top weights file made for this backbone."


def _load_weights_whole(model, path: str) -> None:
    """Load ``path`` into ``model``, or raise ValueError: Keras only warns (and keeps random weights)
    when parts of a file do not match the model, and bneck never computes with weights half loaded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)
    partial = [w for w in caught if "freshly-initialized" in str(w.message) or "Skipping" in str(w.message)]
    if partial:
        raise ValueError(f"{len(partial)} part(s) of the file match no part of the model")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def cut_model(base, backbone: Backbone, layer: str, pool: str):
    """Return a Keras model from the base's input to ``layer``'s output, pooled if asked.

    ``layer`` may name a layer or an operation of the graph (ConvNeXt's residual sums are
    ``keras.ops`` additions, not layers, and are its stage outputs).
    """
    import keras

    nodes = {op.name: op for op in base.operations}
    if layer not in nodes:
        names = [lay.name for lay in base.layers]
        raise ConfigError(
            f"--layer must name a layer of {backbone.label}; its named cut points are "
            f"{', '.join(backbone.cut_points)} (default {backbone.default_layer}), and any of its "
            f"{len(names)} layer names works (e.g. {', '.join(names[-4:])}). Received: layer={layer!r}."
        )
    out = nodes[layer].output
    if pool != "none":
        if len(out.shape) != 4:
            raise ConfigError(
                f"--pool {pool} needs a spatial (4-D) layer output, but {layer} "
                f"gives shape {tuple(out.shape)}. Use --pool none."
            )
        pooling = keras.layers.GlobalAveragePooling2D if pool == "avg" else keras.layers.GlobalMaxPooling2D
        out = pooling(name=f"bneck_{pool}_pool")(out)
    return keras.Model(single_input(base), out, name=f"{backbone.name}_{layer}_{pool}")


# The architectures built last in this process (random weights), by what builds them: a run checks its
# cut before extracting and again before fine-tuning, and a large graph takes seconds to build.
_ARCHITECTURES: collections.OrderedDict = collections.OrderedDict()
_KEPT_ARCHITECTURES = 2


def _architecture_key(backbone: Backbone, size: int, alpha) -> tuple:
    """What makes two architectures the same: the constructor (or model file), its size and width."""
    return (
        backbone.name,
        backbone.constructor,
        getattr(backbone, "path", ""),
        getattr(backbone, "sha256", ""),
        size,
        alpha,
    )


def architecture(backbone: Backbone, size: int, alpha):
    """Return the base's architecture with random weights (shared: never train or load weights into it)."""
    key = _architecture_key(backbone, size, alpha)
    if key not in _ARCHITECTURES:
        import_tensorflow()
        _ARCHITECTURES[key] = backbone.build(None, size, alpha)
        while len(_ARCHITECTURES) > _KEPT_ARCHITECTURES:
            _ARCHITECTURES.popitem(last=False)
    _ARCHITECTURES.move_to_end(key)
    return _ARCHITECTURES[key]


def _take_architecture(backbone: Backbone, size: int, alpha):
    """The architecture ``check_cut`` built, removed from the memo (its new owner loads weights into it)."""
    return _ARCHITECTURES.pop(_architecture_key(backbone, size, alpha), None)


def check_cut(backbone: Backbone, alpha, size: int, layer: str, pool: str):
    """Return the base's architecture (random weights) cut at ``layer`` and pooled by ``pool``.

    Raises ConfigError for a layer the backbone does not have or a pool its output
    cannot take: called before any folder or cache entry is made for a new extractor.
    """
    return cut_model(architecture(backbone, size, alpha), backbone, layer, pool)


class FeatureModel:
    """Callable uint8 batch -> features, built from a backbone entry and a spec: the reference runtime's
    model (``runtimes.tensorflow``). It converts and quantises nothing and is checked against nothing."""

    converted = None
    quantized = None
    equivalence = None
    quantization_stats = None

    def __init__(self, backbone: Backbone, spec: ExtractorSpec):
        tf = import_tensorflow()

        self.spec = spec
        self.model = cut_model(build_base(backbone, spec), backbone, spec.layer, spec.pool)
        self.output_shape = tuple(int(d) for d in self.model.output.shape[1:])
        preprocess = backbone.preprocess_fn()
        model, out_dtype = self.model, tf.as_dtype(spec.dtype)
        size = spec.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def forward(images):
            x = preprocess(tf.cast(images, tf.float32))
            return tf.cast(model(x, training=False), out_dtype)

        self._forward = forward
        self.calls = 0
        self.images = 0

    def forward_function(self):
        """Return the traced uint8 -> features graph (what OpenVINO converts)."""
        return self._forward.get_concrete_function()

    def warm_up(self) -> None:
        """Trace the compiled graph now, on one blank image (not counted as a forward pass).

        One image, not a batch: the batch dimension is symbolic, so this traces the
        same graph for a small fraction of a batch's compute.
        """
        size = self.spec.input_size
        self._forward(np.zeros((1, size, size, 3), np.uint8))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Return features for a (n, size, size, 3) uint8 batch."""
        self.calls += 1
        self.images += len(images)
        return self._forward(images).numpy()
