"""ImageNet top-1 accuracy as Keras publishes it, per constructor (the one figure bneck cannot derive).

Source: the "Top-1 Accuracy" column of https://keras.io/api/applications/ (Keras 3);
MobileNetV3 from the table in ``keras/src/applications/mobilenet_v3.py``'s docstring
(1.0 multiplier, 224 px, float). Measured by Keras on the ImageNet validation set at
each model's default size; a figure for ranking backbones, not a promise on your data.
"""

from __future__ import annotations

TOP1 = {
    "xception": 0.790,
    "vgg16": 0.713,
    "vgg19": 0.713,
    "resnet50": 0.749,
    "resnet101": 0.764,
    "resnet152": 0.766,
    "resnet50v2": 0.760,
    "resnet101v2": 0.772,
    "resnet152v2": 0.780,
    "inceptionv3": 0.779,
    "inceptionresnetv2": 0.803,
    "mobilenet": 0.704,
    "mobilenetv2": 0.713,
    "mobilenetv3small": 0.681,
    "mobilenetv3large": 0.756,
    "densenet121": 0.750,
    "densenet169": 0.762,
    "densenet201": 0.773,
    "nasnetmobile": 0.744,
    "nasnetlarge": 0.825,
    "efficientnetb0": 0.771,
    "efficientnetb1": 0.791,
    "efficientnetb2": 0.801,
    "efficientnetb3": 0.816,
    "efficientnetb4": 0.829,
    "efficientnetb5": 0.836,
    "efficientnetb6": 0.840,
    "efficientnetb7": 0.843,
    "efficientnetv2b0": 0.787,
    "efficientnetv2b1": 0.798,
    "efficientnetv2b2": 0.805,
    "efficientnetv2b3": 0.820,
    "efficientnetv2s": 0.839,
    "efficientnetv2m": 0.853,
    "efficientnetv2l": 0.857,
    "convnexttiny": 0.813,
    "convnextsmall": 0.823,
    "convnextbase": 0.853,
    "convnextlarge": 0.863,
    "convnextxlarge": 0.867,
}

# MobileNet v1 and v2 at 224 px per width multiplier (alpha): the TF-slim checkpoints' table
# (tensorflow/models research/slim/nets/mobilenet_v1.md and mobilenet/README.md), the files
# Keras' weights are converted from. Used to rank the widths whose files are on a machine.
TOP1_BY_ALPHA = {
    "mobilenet": {1.0: 0.709, 0.75: 0.684, 0.5: 0.633, 0.25: 0.498},
    "mobilenetv2": {1.4: 0.750, 1.3: 0.744, 1.0: 0.718, 0.75: 0.698, 0.5: 0.654, 0.35: 0.603},
}
