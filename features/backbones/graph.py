"""What a backbone's graph says about it: its stage outputs, unfreeze points and cost.

Nothing here is typed per architecture. A *cut* is a layer every path from the input
to the output passes through (no connection jumps over it); a *stage output* is the
last cut at each spatial size; the *cut points* offered are the stage outputs at
stride 8 and coarser; fine-tuning's unfreeze points start the blocks after the last two
stage outputs (NASNet, whose cells all read the two cells before them, has no such cut:
there they are the first layers with weights at the last two spatial sizes). The graph
is read from ``model.get_config()`` (Keras' public description of a functional model),
so it does not depend on Keras' private node objects.

``fresh_layer_names`` builds a model with Keras' automatic layer names counted from
zero, so ``activation_12`` means the same layer in every process, whatever was built
before: a layer name is part of a feature cache key.
"""

from __future__ import annotations

import collections
import contextlib
import math
import warnings

# Layers that reshape the input without computing anything: never offered as cut points.
_NOT_FEATURES = ("InputLayer", "ZeroPadding2D", "Rescaling", "Normalization", "Cropping2D")


@contextlib.contextmanager
def fresh_layer_names():
    """Inside this block Keras' automatic layer names start again from ``activation``, ``add``, ...

    Every ``keras.applications`` constructor bneck calls runs inside it, so it also silences
    the one notice they give for what bneck always does: MobileNetV3 says "weights for input
    shape (224, 224) will be loaded as the default" whenever it gets an input tensor, but
    bneck resolves the weights itself, for the size asked, and checks they load."""
    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`input_shape` is undefined or non-square", category=UserWarning)
            yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def single_input(model):
    """The model's input as Keras' callers pass it: a tensor when there is one input (a model read
    from a file, or built from ``input_tensor``, keeps a one-item list, and a model built on that
    list warns whenever it is called with a tensor), else the structure as it is."""
    return model.inputs[0] if len(model.inputs) == 1 else model.input


def _sources(inbound) -> set[str]:
    """The layer names a layer's serialized ``inbound_nodes`` read from."""
    found: set[str] = set()
    if isinstance(inbound, dict):
        history = inbound.get("config", {}).get("keras_history") if inbound.get("class_name") else None
        if isinstance(history, list | tuple) and history:
            found.add(history[0])
        for value in inbound.values():
            found |= _sources(value)
    elif isinstance(inbound, list | tuple):
        for value in inbound:
            found |= _sources(value)
    return found


def cut_layers(model) -> list[str]:
    """Names of the layers no connection jumps over, in the model's (topological) order."""
    order = [op.name for op in model.operations]
    index = {name: i for i, name in enumerate(order)}
    furthest_edge = collections.defaultdict(int)  # layer index -> the furthest layer it feeds
    for layer in model.get_config()["layers"]:
        target = index[layer["name"]]
        for source in _sources(layer.get("inbound_nodes", [])):
            if source in index:
                furthest_edge[index[source]] = max(furthest_edge[index[source]], target)
    cuts, reach = [], -1
    for i, name in enumerate(order):
        if reach <= i:
            cuts.append(name)
        reach = max(reach, furthest_edge[i])
    return cuts


def stage_outputs(model) -> list[tuple[str, int]]:
    """(layer name, spatial side) of the last cut at each spatial size, input side first."""
    cuts = set(cut_layers(model))
    candidates = [
        layer
        for layer in model.operations
        if layer.name in cuts and len(layer.output.shape) == 4 and type(layer).__name__ not in _NOT_FEATURES
    ]
    stages: list[tuple[str, int]] = []
    for layer in candidates:
        side = int(layer.output.shape[1])
        if stages and stages[-1][1] == side:
            stages[-1] = (layer.name, side)
        else:
            stages.append((layer.name, side))
    return stages


def _block_start(model, after: str, cuts: set[str]) -> str | None:
    """The first layer after the cut ``after`` that has weights or starts a branch (a layer, not an op)."""
    import keras

    ops = model.operations
    i = [op.name for op in ops].index(after) + 1
    while i < len(ops) and (not getattr(ops[i], "weights", None) and ops[i].name in cuts or not _is_layer(ops[i])):
        i += 1
    return ops[i].name if i < len(ops) and isinstance(ops[i], keras.layers.Layer) else None


def _is_layer(op) -> bool:
    import keras

    return isinstance(op, keras.layers.Layer)


def unfreeze_points(model, input_side: int) -> tuple[list[str], bool]:
    """Where fine-tuning can start, last stage first, and whether the layers above each read only
    the cut below it (so stage 3 can cache what is below: ``--cache-frozen``).

    The start of the block after each of the last two stage outputs at stride 8 or coarser; a
    network without such cuts (NASNet) gets the first layer with weights at each of the last two
    spatial sizes.
    """
    cuts = set(cut_layers(model))
    stages = stage_outputs(model)
    coarse = [name for name, side in stages[:-1] if side * 8 <= input_side * 1.2]  # not the stem's
    points = [p for name in reversed(coarse) if (p := _block_start(model, name, cuts))][:2]
    if points:
        return points, True
    firsts: dict[int, str] = {}
    for op in model.operations:
        if getattr(op, "weights", None) and len(op.output.shape) == 4:
            firsts.setdefault(int(op.output.shape[1]), op.name)
    points = list(reversed(list(firsts.values())))[:2]
    order = [op.name for op in model.operations]
    # Cacheable when what is just below each point is a cut: nothing above reads further back.
    return points, bool(points) and all(order.index(p) > 0 and order[order.index(p) - 1] in cuts for p in points)


def multiply_adds(model) -> int:
    """Multiply-adds of one forward pass: for each kernel, its size times the positions it is applied at."""
    total = 0
    for layer in model.layers:
        kernels = [w for w in layer.weights if w.name.split("/")[-1].endswith("kernel")]
        if not kernels or not isinstance(layer.output.shape, tuple | list):
            continue
        positions = math.prod(int(d) for d in layer.output.shape[1:-1]) if len(layer.output.shape) > 2 else 1
        total += positions * sum(math.prod(int(d) for d in k.shape) for k in kernels)
    return total


def describe_graph(model, input_side: int) -> dict:
    """The graph-derived part of a catalog record for ``model`` built at ``input_side`` pixels."""
    stages = stage_outputs(model)
    points, splits = unfreeze_points(model, input_side)
    return {
        "default_layer": model.layers[-1].name,
        "cut_points": [name for name, side in stages if side * 8 <= input_side * 1.2][-4:],
        "unfreeze_points": points,
        "unfreeze_splits": splits,
        "parameters": int(model.count_params()),
        "multiply_adds": multiply_adds(model),
    }
