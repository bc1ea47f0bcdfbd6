"""The graph reading that finds stage outputs, unfreeze points and cost, on models built by hand."""

from __future__ import annotations

import keras
import pytest

from bneck.features.backbones.graph import (
    cut_layers,
    describe_graph,
    fresh_layer_names,
    multiply_adds,
    stage_outputs,
    unfreeze_points,
)

pytestmark = pytest.mark.pure


def _residual_net():
    """stem (32) -> block a (32, residual) -> down (16) -> block b (16, residual) -> head conv."""
    x = inp = keras.Input((32, 32, 3), name="input_layer")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="a_conv1")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="a_conv2")(y)
    x = keras.layers.Add(name="a_out")([x, y])
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, name="down")(x)
    y = keras.layers.Conv2D(8, 1, name="b_conv1")(x)
    x = keras.layers.Add(name="b_out")([x, y])
    x = keras.layers.Conv2D(6, 1, name="last")(x)
    return keras.Model(inp, x)


def test_a_layer_a_connection_jumps_over_is_no_cut():
    cuts = cut_layers(_residual_net())
    assert cuts == ["input_layer", "stem", "a_out", "pad", "down", "b_out", "last"]
    assert "a_conv1" not in cuts and "b_conv1" not in cuts  # the residual jumps over them


def test_stage_outputs_are_the_last_cut_at_each_size_and_padding_is_never_one():
    assert stage_outputs(_residual_net()) == [("a_out", 32), ("last", 16)]


def test_a_stage_starts_at_its_first_weighted_layer():
    assert unfreeze_points(_residual_net(), 32 * 8) == (["down"], True)  # after the cut a_out; 'pad' has no weights


def test_multiply_adds_are_kernel_size_times_positions():
    model = _residual_net()
    by_hand = (
        32 * 32 * (3 * 3 * 3 * 4)  # stem
        + 2 * 32 * 32 * (3 * 3 * 4 * 4)  # a_conv1, a_conv2
        + 16 * 16 * (3 * 3 * 4 * 8)  # down
        + 16 * 16 * (8 * 8)  # b_conv1
        + 16 * 16 * (8 * 6)  # last
    )
    assert multiply_adds(model) == by_hand
    described = describe_graph(model, 32)
    assert described["default_layer"] == "last" and described["parameters"] == model.count_params()


def test_automatic_names_are_the_same_whatever_was_built_before():
    def names():
        with fresh_layer_names():
            x = inp = keras.Input((8, 8, 3))
            x = keras.layers.Activation("relu")(keras.layers.Conv2D(2, 1)(x))
            return [layer.name for layer in keras.Model(inp, x).layers[1:]]

    first = names()
    keras.layers.Activation("relu"), keras.layers.Conv2D(2, 1)  # advance Keras' own counters
    assert names() == first == ["conv2d", "activation"]
    assert keras.layers.Activation("relu").name != "activation"  # the counters outside are untouched


def test_without_a_cut_to_start_from_the_points_say_the_top_cannot_be_split():
    """Like NASNet's cells, every block also reads the input: nothing but the input is a cut."""
    x = inp = keras.Input((32, 32, 3), name="input_layer")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="down1")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="down2")(x)
    skip = keras.layers.AveragePooling2D(4, name="skip")(inp)
    x = keras.layers.Concatenate(name="joined")([x, skip])
    x = keras.layers.Conv2D(4, 1, name="last")(x)
    assert unfreeze_points(keras.Model(inp, x), 32) == (["down2", "down1"], False)
