"""The extractor specification and its cache key.

The key decides whether stored features can be reused, so it names exactly the
fields that change the numbers, and no others (Hugging Face ``datasets``
fingerprints). Bump ``SCHEMA_VERSION`` whenever extraction output would change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bneck.core.hashing import sha256_json

SCHEMA_VERSION = 1

# Resizing is done by one method only, Pillow's bilinear filter on the decoded RGB
# image (the same call keras.utils.load_img makes), so it is both recorded and keyed.
INTERPOLATION = "pil-bilinear"

POOLS = ("none", "avg", "max")
DTYPES = ("float32", "float16")
# What a record may say besides: "bfloat16" or "e8m5", fine-tuning views stored float32 rounded
# (``featurefile.storage.ROUNDED_DTYPES``). Never a choice of `bneck extract`.
RECORDED_DTYPES = DTYPES + ("bfloat16", "e8m5")

KEY_FIELDS = (
    "schema_version",
    "backbone",
    "alpha",
    "weights_sha256",
    "layer",
    "pool",
    "input_size",
    "preprocessing",
    "interpolation",
    "dtype",
    "augmentation",
    "quantization",
)
# Enter the key only when set (an augmented view for stage 3's cache; int8 extraction),
# so plain extractions keep the keys they had before the fields existed.
OPTIONAL_KEY_FIELDS = ("augmentation", "quantization")

# Deliberately left out: they change where or how fast rows are made, never their values.
NOT_IN_KEY = (
    "batch_size",
    "out_dir",
    "cache_dir",
    "workers",
    "verbose",
    "labels",
    "paths",
    "weights_path",
    "weights",
    "runtime",
)


@dataclass(frozen=True)
class ExtractorSpec:
    """Everything that determines the features of one image."""

    backbone: str
    alpha: float | None
    weights: str
    weights_sha256: str
    layer: str
    pool: str
    input_size: int
    preprocessing: str
    interpolation: str = INTERPOLATION
    dtype: str = "float32"
    augmentation: str | None = None  # JSON of the augmentation, its seed and view index
    quantization: str | None = None  # JSON of the int8 method and calibration images' content
    schema_version: int = SCHEMA_VERSION
    weights_path: str | None = field(default=None, compare=False, repr=False)

    def key_fields(self) -> dict:
        """Return the fields that enter the key, by name."""
        return {name: getattr(self, name) for name in KEY_FIELDS}

    @property
    def key(self) -> str:
        """Return the extractor key: sha256 of the sorted-key JSON of the key fields."""
        return extractor_key(self.key_fields())

    def describe(self) -> dict:
        """Return every recorded field (key fields plus the weights label), JSON-ready."""
        out = asdict(self)
        out.pop("weights_path")
        return out


def extractor_key(fields: dict) -> str:
    """Return the key for a dict holding ``KEY_FIELDS`` (optional ones may be absent or None)."""
    return sha256_json(
        {
            name: fields.get(name)
            for name in KEY_FIELDS
            if not (name in OPTIONAL_KEY_FIELDS and fields.get(name) is None)
        }
    )
