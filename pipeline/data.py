"""Stage 2's input: the split files of one extraction, checked to belong together.

Small feature sets are loaded whole; larger than ``max_memory`` they are streamed
from HDF5 in contiguous blocks, never holding the whole array.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bneck.core.files import kind_of
from bneck.core.hashing import sha256_file
from bneck.features import FeatureFileError, read_features, read_summary
from bneck.features.featurefile.format import RowReader

SPLITS = ("train", "validation", "test")
# The most float32 feature bytes a pooling pass reads at once (``FeatureSet.reduce_rows``): with the
# blocks a streamed model reads (a quarter of its budget), pooling 100,000 images held 800 MB of blocks.
REDUCE_BLOCK_BYTES = 32 << 20


@dataclass
class FeatureSet:
    """Validated train/validation(/test) files sharing one extractor and one class list."""

    folder: str
    files: dict[str, str]
    attrs: dict[str, dict]
    sha256: dict[str, str]
    _loaded: dict = field(default_factory=dict, repr=False)
    _readers: dict = field(default_factory=dict, repr=False)

    @property
    def class_names(self) -> list[str]:
        return self.attrs["train"]["class_names"]

    @property
    def extractor_key(self) -> str:
        return self.attrs["train"]["extractor_key"]

    @property
    def extractor(self) -> dict:
        return self.attrs["train"]["extractor"]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.attrs["train"]["features_shape"][1:])

    def nbytes(self, split: str) -> int:
        """Return the in-memory size of a split's features."""
        shape = self.attrs[split]["features_shape"]
        itemsize = np.dtype(self.attrs[split]["dtype"]).itemsize
        return int(np.prod(shape, dtype=np.int64)) * itemsize

    def reduce_rows(self, rows: int) -> int:
        """``rows``, or fewer: a pass that reduces every block it reads (pooling) reads at most
        ``REDUCE_BLOCK_BYTES`` of float32 features at once, so it holds the reduced rows and little more."""
        return max(1, min(rows, REDUCE_BLOCK_BYTES // (4 * int(np.prod(self.feature_shape)))))

    def reduced(self, split: str, reduce, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (``reduce``(features) as float32, labels) of a split, read in blocks of ``rows`` rows so
        the whole features are never in memory at once (``reduce``: a row-wise map, such as pooling the
        spatial grid; its ``mode`` names it for the cache shared by every classifier of a call)."""
        key = (split, "reduced", getattr(reduce, "mode", id(reduce)))
        if split in self._loaded:  # already in memory: no second read
            x, y = self._loaded[split]
            return np.asarray(reduce.transform(x), dtype=np.float32), y
        if key not in self._loaded:
            x, done = np.zeros((0, 0), np.float32), 0
            for block, _ in self.blocks(split, self.reduce_rows(rows)):
                part = np.asarray(reduce.transform(block), dtype=np.float32)
                if not done:  # one array filled in place: no list of parts and their concatenation
                    x = np.empty((len(self.labels(split)),) + part.shape[1:], np.float32)
                x[done : done + len(part)] = part
                done += len(part)
            x.flags.writeable = False
            self._loaded[key] = (x, self.labels(split).astype(np.int64))
        return self._loaded[key]

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Return (features as float32, labels) of a split, verified against its checksum.

        Read once per FeatureSet: every classifier of a ``train`` call shares the arrays
        (they are never modified in place).
        """
        if split not in self._loaded:
            f = read_features(self.files[split])
            x = f.features.astype(np.float32, copy=False)
            x.flags.writeable = False
            self._loaded[split] = (x, f.labels.astype(np.int64))
        return self._loaded[split]

    def labels(self, split: str) -> np.ndarray:
        """Return a split's labels (read and checked when the set was opened)."""
        return self.attrs[split]["labels"]

    def reader(self, split: str, rows: int) -> RowReader:
        """Return the checked block reader of a split's features (one first pass per split and size)."""
        key = (split, rows)
        if key not in self._readers:
            self._readers[key] = RowReader(self.files[split], rows)
        return self._readers[key]

    def blocks(
        self, split: str, rows: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (features float32, labels) in contiguous blocks of ``rows`` rows, every byte checked.

        With ``rng`` the blocks come in random order (rows are sorted by path, hence
        by class, so sequential blocks would feed SGD one class at a time).
        """
        reader, labels = self.reader(split, rows), self.labels(split)
        order = np.arange(len(reader))
        if rng is not None:
            rng.shuffle(order)
        for start, block in reader.blocks(order):
            yield block.astype(np.float32), labels[start : start + len(block)]


def _describe_difference(name: str, a: dict, b: dict) -> str:
    if a["extractor_key"] != b["extractor_key"]:
        diffs = [
            f"{k} {b['extractor'].get(k)!r} here, {a['extractor'].get(k)!r} in train.h5"
            for k in a["extractor"]
            if a["extractor"].get(k) != b["extractor"].get(k)
        ]
        return f"it was made by another extractor ({'; '.join(diffs) or 'different key'})"
    return f"its classes are {b['class_names']} instead of {a['class_names']}"


def open_feature_set(folder: str, require_test: bool = False) -> FeatureSet:
    """Open ``folder``'s train.h5, validation.h5 and (if present) test.h5.

    Raises FeatureFileError when a required file is missing or damaged, or when the
    files do not share one extractor key and one class list (naming the odd file).
    """
    folder = os.path.abspath(os.path.expanduser(str(folder)))
    if os.path.isfile(folder):
        raise FeatureFileError(
            f"{folder} is a file, not a features folder: give the folder `bneck extract` "
            f"wrote (holding train.h5, validation.h5 and test.h5)."
        )
    if not os.path.isdir(folder):
        raise FeatureFileError(
            f"features folder not found: {folder}. Create it with `bneck extract DATA_DIR --out FOLDER`."
        )
    files, attrs = {}, {}
    for split in SPLITS:
        path = os.path.join(folder, f"{split}.h5")
        if os.path.exists(path) and not os.path.isfile(path):
            raise FeatureFileError(
                f"{path} is {kind_of(os.stat(path).st_mode)}, not a feature file; bneck reads only regular files."
            )
        if not os.path.isfile(path):
            if split != "test" or require_test:
                raise FeatureFileError(
                    f"{path} not found: training needs train.h5 and "
                    f"validation.h5 (test.h5 optional) in {folder}, as "
                    "written by `bneck extract`."
                )
            continue
        files[split], attrs[split] = path, read_summary(path)
    for split in files:
        if split != "train" and (
            attrs[split]["extractor_key"] != attrs["train"]["extractor_key"]
            or attrs[split]["class_names"] != attrs["train"]["class_names"]
        ):
            raise FeatureFileError(
                f"{files[split]} does not match {files['train']}: "
                f"{_describe_difference(split, attrs['train'], attrs[split])}. All split files "
                "must come from one `bneck extract` run over one dataset."
            )
    return FeatureSet(folder, files, attrs, {s: sha256_file(p) for s, p in files.items()})


# Peak memory of training in memory, per byte of the arrays it loads: the arrays, the copies the
# model makes of them (a Keras head's dataset, a scaler's output) and the predictions; measured
# by scripts/bench_scale.py (about 3 for a Keras head, TensorFlow's own memory aside).
IN_MEMORY_FACTOR = 3


def physical_memory() -> int:
    """This machine's memory in bytes (1 GiB when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def check_budget(need: int, max_memory: int | None) -> bool:
    """Return True when arrays of ``need`` bytes must be streamed from disk: larger than ``max_memory``,
    or, without one, when training them in memory would take more than half of this machine's memory."""
    if max_memory is None:
        return need * IN_MEMORY_FACTOR > physical_memory() // 2
    return need > max_memory
