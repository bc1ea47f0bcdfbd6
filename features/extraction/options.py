"""Stage 1's options: one table for ``extract()``, ``bneck extract`` and ``[extract]`` in a run's config."""

from __future__ import annotations

from bneck.core.options import Option, OptionTable
from bneck.features.backbones.model_file import is_model_file, preprocess_choices
from bneck.features.backbones.registry import get_backbone
from bneck.features.backbones.spec import DTYPES, POOLS
from bneck.features.images.dataset import SPLITS, parse_fractions
from bneck.features.runtimes.quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MIN_COSINE, PRECISIONS
from bneck.features.runtimes.registry import known_runtime, runtime_names

# The runtimes come from the registry (a runtime registered later, e.g. by a plugin or a test, is
# accepted too: the check asks the registry at call time); these are the ones shown in help and docs.
RUNTIMES = ("auto",) + runtime_names()
ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 256


class RuntimeOption(Option):
    """``--runtime``: ``auto`` or a runtime registered when the value is checked (a plugin's or a test's
    too), refused with the closest registered name."""

    def check(self, value, where: str = ""):
        return known_runtime(super().check(value, where), what=where or self.flag)


def _known_backbone(name: str) -> str:
    if not is_model_file(name):  # a model file is checked when it is read, before any work
        get_backbone(name)  # raises ConfigError naming the backbones there are
    return name


def _fractions(value) -> list:
    return list(parse_fractions(value))


EXTRACT = OptionTable(
    "extract",
    [
        Option(
            "backbone",
            str,
            "vgg16",
            "the convolutional base: a `keras.applications` constructor, lowercased, or the path "
            "of your own Keras model file (`.keras`)",
            check_value=_known_backbone,
            allowed_text="a backbone name (`bneck backbones` lists them) or a .keras file",
            metavar="NAME|PATH",
        ),
        Option(
            "preprocess",
            str,
            None,
            "your own model file only: the `keras.applications` family whose `preprocess_input` to "
            "apply (default none: the model gets RGB in 0..255)",
            choices=tuple(preprocess_choices()),
            nullable=True,
            metavar="FAMILY",
        ),
        Option(
            "weights",
            str,
            "imagenet",
            "`imagenet` (the official file, looked up in `$KERAS_HOME/models` then in bneck's weights "
            "folder, `bneck weights`; downloaded if missing), `none` (seeded random init) or a `.h5` weights file",
            metavar="imagenet|none|PATH",
        ),
        Option(
            "alpha",
            float,
            None,
            "width multiplier: mobilenet 0.25, 0.5, 0.75, 1.0; mobilenetv2 0.35 to 1.4 (default 1.0)",
            low=0,
            open_low=True,
            high=4,
        ),
        Option(
            "size", int, None, "input size in pixels (default: 150 for VGG, the ImageNet size for the others)", low=1
        ),
        Option(
            "layer",
            str,
            None,
            "take this layer's output (default: the backbone's last convolutional output, "
            "e.g. `block5_pool`; `bneck cache info` shows what a file used)",
        ),
        Option("pool", str, "none", "spatial pooling of the layer's output", choices=POOLS),
        Option("dtype", str, "float32", "stored precision", choices=DTYPES),
        RuntimeOption(
            "runtime",
            str,
            "auto",
            "`auto`: OpenVINO when installed and its converted model is already "
            "checked on this CPU, or when 2,000+ images make converting pay; "
            "TensorFlow otherwise "
            "(and whenever OpenVINO's numbers differ). `openvino` (`pip install -e "
            '".[openvino]"`): converted once, checked against TensorFlow on this CPU '
            "before its first row, then sharing TensorFlow's key",
            allowed_text="one of " + ", ".join(map(repr, RUNTIMES)),
            metavar="|".join(RUNTIMES),
        ),
        Option(
            "precision",
            str,
            "fp32",
            "fp32; int8 (OpenVINO + NNCF, calibrated on training images, its own "
            "cache key); bf16 (OpenVINO computing in bf16, CPUs with AVX512_BF16 or AMX "
            "only, its own cache key); int8 and bf16 pass a cosine gate against fp32",
            choices=PRECISIONS,
        ),
        Option(
            "calibration_images",
            int,
            DEFAULT_CALIBRATION_IMAGES,
            "int8: training images that calibrate it",
            low=1,
            high=100_000,
        ),
        Option(
            "min_cosine",
            float,
            DEFAULT_MIN_COSINE,
            "int8, bf16: refuse below this cosine to fp32 on held-back training images",
            low=-1,
            high=1,
        ),
        Option("force", bool, False, "int8: accept the quantised model below --min-cosine"),
        Option("batch_size", int, 32, "images per forward pass (not in the key)", low=1, high=4096),
        Option(
            "splits",
            list,
            None,
            "which splits to extract (default: all present)",
            item=str,
            choices=SPLITS,
            nullable=True,
            metavar="SPLIT",
        ),
        Option(
            "split",
            list,
            None,
            "single-root layout: the train, validation and test fractions (default 0.7,0.15,0.15)",
            nullable=True,
            check_value=_fractions,
            allowed_text="three fractions summing to 1, e.g. 0.7,0.15,0.15",
            coerce=lambda v: v.split(",") if isinstance(v, str) else v,
            metavar="FRACTIONS",
        ),
        Option("seed", int, 0, "seed of the single-root split (and of int8 calibration)", low=0, high=2**32 - 1),
        Option("exclude", list, [], "classes to leave out", item=str, metavar="CLASS"),
        Option(
            "follow_links",
            bool,
            False,
            "follow symbolic links that lead out of DATA_DIR (folders and files); "
            "only for data folders you built yourself",
        ),
        Option(
            "cache_dir", str, None, "the shared feature cache (default $BNECK_CACHE or ~/.cache/bneck)", metavar="DIR"
        ),
        Option(
            "keep_cache",
            bool,
            True,
            "keep the rows in the cache as well as in the split files (a rerun then costs seconds and other "
            "projects reuse them); --no-keep-cache removes this extractor's cache entry once every split file "
            "is written: half the disk, and extracting these images again computes them again",
        ),
        Option(
            "workers", int, 0, "local: decoding threads (0: all cores); ray: actors (0: one per node)", low=0, high=4096
        ),
        Option("engine", str, "local", "local, or ray (actors write shard files)", choices=ENGINES),
        Option("address", str, None, "ray: the cluster to join, auto or HOST:PORT (default: start a local one)"),
        Option("shard_size", int, DEFAULT_SHARD_SIZE, "ray: images per shard file", low=1, high=1_000_000),
        Option("num_gpus_per_worker", float, 0.0, "ray: GPUs each actor asks for", low=0, high=64),
    ],
)
