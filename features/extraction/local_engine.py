"""The local engine of stage 1: one split's missing rows computed here, then its file written from the cache."""

from __future__ import annotations

import os
import time

from bneck.core.errors import FeatureFileError
from bneck.features.cache.rows import (
    CorruptChunk,
    MissingRows,
    RowCache,
    damaged_chunk_error,
    missing_shas,
    remaking_missing,
)
from bneck.features.extraction.report import SplitReport
from bneck.features.featurefile.format import holds, write_split_file
from bneck.features.images.dataset import Dataset
from bneck.features.runtimes.extractor import Extractor, split_content

MAX_MISSING_ROW_RETRIES = 3


def extract_split(
    ex: Extractor, dataset: Dataset, split: str, out_dir: str, usable: list, quarantine: list
) -> SplitReport:
    """The local engine: compute the split's missing rows here, then write its file from the cache."""
    start = time.perf_counter()
    ex.cache.refresh()
    todo_shas = missing_shas(ex.cache, (sha for _, sha in usable))
    ex.cache.refuse_writing(len(todo_shas))  # a read-only shared cache: before any row is computed
    first_path: dict[str, str] = {}
    for record, sha in usable:
        first_path.setdefault(sha, record.abspath)
    failed = ex.compute(split, [(sha, first_path[sha]) for sha in todo_shas])
    path = os.path.join(out_dir, f"{split}.h5")
    attrs = ex.split_attrs(dataset)

    def write() -> tuple:
        content = split_content(dataset, split, usable, failed, quarantine)
        shape, dtype = ex.cache.row_layout(content.shas[0])
        # An existing file is kept only if it holds the cache's own rows, bit for bit: a file
        # someone handed over (re-signed or not) is never taken as this extraction's output.
        # (no file there: nothing to compare, and no reason to read every row twice)
        unchanged = os.path.isfile(path) and holds(path, attrs, content, ex.cache.digest(content.shas))
        if not unchanged:
            write_split_file(
                path, content, attrs, shape, str(dtype), lambda sink: ex.cache.read_rows(content.shas, sink)
            )
        return content, unchanged

    def remake(shas: list[str]) -> None:  # `bneck cache gc` removed rows meanwhile: make them again
        nonlocal todo_shas
        failed.update(ex.compute(split, [(sha, first_path[sha]) for sha in shas]))
        todo_shas = list(dict.fromkeys(todo_shas + shas))

    content, unchanged = _write_remaking_missing(write, remake, split, ex.cache)
    todo = set(todo_shas)
    computed = len(todo - set(failed))
    reused_rows = sum(1 for sha in content.shas if sha not in todo)
    return SplitReport(
        split,
        len(content.shas),
        len(dataset.class_names),
        len(content.quarantine),
        reused_rows,
        computed,
        time.perf_counter() - start,
        path,
        content.quarantine,
        file_unchanged=unchanged,
    )


def _write_remaking_missing(write, remake, split: str, cache: RowCache) -> tuple:
    """Return ``write()``, remaking rows that left the cache meanwhile; cache trouble becomes FeatureFileError."""
    try:
        return remaking_missing(write, remake, MAX_MISSING_ROW_RETRIES)
    except MissingRows:
        raise FeatureFileError(
            f"rows of {split!r} kept leaving the cache {cache.folder} while "
            "this run wrote them (is `bneck cache gc --older-than` running "
            "in a loop?). Rerun when it has finished."
        ) from None
    except CorruptChunk as exc:
        raise damaged_chunk_error(exc) from None
