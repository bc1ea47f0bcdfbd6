"""Every registry entry builds, its default layer and cut points exist, its preprocessing is its own."""

from __future__ import annotations

import numpy as np
import pytest

from bneck.features import BACKBONES, ConfigError, get_backbone
from bneck.features.backbones.feature_model import cut_model
from bneck.features.backbones.resolve import resolve_spec
from bneck.features.backbones.weights_store import imagenet_candidates

pytestmark = pytest.mark.pure

REQUIRED = {"vgg16", "vgg19", "resnet50", "inceptionv3", "xception", "mobilenet", "mobilenetv2", "efficientnetb0"}


def test_registry_has_the_required_backbones():
    assert REQUIRED <= set(BACKBONES)
    assert get_backbone("VGG16").default_size == 150


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_entry_builds_and_names_real_layers(name):
    entry = get_backbone(name)
    size = max(entry.min_size, 75)
    base = entry.build(None, size, entry.default_alpha)
    names = {layer.name for layer in base.layers}
    assert entry.default_layer in names
    assert set(entry.cut_points) <= names
    model = cut_model(base, entry, entry.default_layer, "avg")
    assert len(model.output.shape) == 2
    x = np.full((1, size, size, 3), 128.0, np.float32)
    out = entry.preprocess_fn()(x.copy())
    expected = {"caffe": 128.0 - 103.939, "tf": 128.0 / 127.5 - 1.0, "none": 128.0}
    assert out.shape == x.shape
    assert out[0, 0, 0, 0] == pytest.approx(expected[entry.preprocessing.split(":")[0].split()[0]], abs=1e-4)


def test_official_weights_file_names():
    assert get_backbone("mobilenet").weights_file(0.25, 224) == "mobilenet_2_5_224_tf_no_top.h5"
    assert get_backbone("mobilenet").weights_file(0.5, 200) == "mobilenet_5_0_224_tf_no_top.h5"
    assert get_backbone("vgg16").weights_file(None, 150) == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert (
        get_backbone("mobilenetv2").weights_file(1.0, 160)
        == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"
    )
    assert imagenet_candidates("x.h5")[0].endswith("models/x.h5")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(backbone="vgg61"), "backbone must be one of"),
        (dict(backbone="mobilenet", alpha=0.3), "alpha for mobilenet must be one of"),
        (dict(backbone="vgg16", alpha=0.5), "--alpha applies only"),
        (dict(backbone="vgg16", size=16), "from 32 to 1024"),
        (dict(backbone="vgg16", size=40000), "from 32 to 1024"),
        (dict(backbone="vgg16", pool="sum"), "--pool must be one of"),
        (dict(backbone="vgg16", dtype="int8"), "--dtype must be one of"),
        (dict(backbone="vgg16", weights="/no/such/file.h5"), "no file exists at /no/such/file.h5"),
    ],
)
def test_bad_options_name_the_option_and_the_allowed_values(kwargs, message):
    with pytest.raises(Exception) as err:
        resolve_spec(**{"weights": "none", **kwargs})
    assert message in str(err.value)
    assert "Received" in str(err.value)
    assert isinstance(err.value, ConfigError) or "weights" in message or "no file" in message


def test_unknown_layer_lists_cut_points(tiny_data, tmp_path):
    from bneck.features import extract

    with pytest.raises(ConfigError, match="block4_conv3, block5_conv3, block5_pool"):
        extract(tiny_data, tmp_path / "o", backbone="vgg16", weights="none", layer="block9_pool", verbose=False)


def test_missing_imagenet_file_offline_says_where_to_put_it(tiny_data, tmp_path):
    from bneck.features import WeightsError, extract

    with pytest.raises(WeightsError) as err:
        extract(tiny_data, tmp_path / "o", backbone="resnet50", weights="imagenet", verbose=False)
    text = str(err.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in text and "models" in text


def test_wrong_weights_file_for_backbone_is_a_clear_error(tiny_data, tmp_path, tiny):
    from bneck.features import WeightsError, extract

    with pytest.raises(WeightsError, match="cannot load weights"):  # a MobileNet weights file
        extract(tiny_data, tmp_path / "o", backbone="vgg16", weights=tiny["weights"], verbose=False)


def test_the_input_layer_has_one_name_however_many_models_the_process_built():
    """Left to Keras, the second model a process builds names its input 'input_layer_1'; `--layer
    input_layer` (and cache verify rebuilding several entries) would then depend on build order."""
    from bneck.features.backbones.feature_model import check_cut

    for name, alpha in (("mobilenet", 0.25), ("mobilenetv2", 0.35), ("mobilenet", 0.25)):
        cut = check_cut(get_backbone(name), alpha, 96, "input_layer", "none")
        assert cut.layers[0].name == "input_layer" and tuple(cut.output.shape[1:]) == (96, 96, 3)
