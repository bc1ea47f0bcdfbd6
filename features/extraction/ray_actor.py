"""The Ray actor of ``--engine ray``: one model load, then shard after shard into shard files."""

from __future__ import annotations

import json
import os
import resource
import time

import numpy as np

from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.cache.rows import RowCache, missing_shas, write_rows_file
from bneck.features.runtimes.extractor import Extractor


class ShardExtractor:
    """A Ray actor: builds the network once, then extracts shard after shard.

    Computing rows is stage 1's own loop (``Extractor.compute``: decoding on the
    actor's cores, committing to the cache as it goes); the actor adds the shard file.
    """

    def __init__(self, spec_fields: dict, cache_dir: str, batch_size: int, threads: int):
        spec = ExtractorSpec(**spec_fields)
        self.threads = threads
        self.extractor = Extractor(
            spec, RowCache(cache_dir, spec), batch_size=batch_size, workers=threads, verbose=False
        )
        self.equivalence = None  # this worker's check against the driver's reference rows

    def check(self, reference: dict) -> dict:
        """Compare this worker's rows for the reference images with the driver's; once per actor.

        Raises RuntimeMismatch (never retried) when they differ beyond the tolerance.
        """
        if self.equivalence is None:
            import socket

            from bneck.features.images.batches import decoded_batches
            from bneck.features.runtimes.equivalence import compare

            model = self.extractor.network()
            rows = [
                model(batch)
                for _, batch, _ in decoded_batches(
                    [(p, p) for p in reference["paths"]], self.extractor.spec.input_size, len(reference["paths"])
                )
            ]
            self.equivalence = compare(
                np.concatenate(rows),
                reference["rows"],
                "a Ray worker's TensorFlow",
                f"node {socket.gethostname()} (pid {os.getpid()})",
            )
        return self.equivalence

    def ready(self, folders: list[str]) -> dict:
        """Say where this actor runs and which of ``folders`` (--out, the cache) its node cannot see.

        The driver calls it once per actor: every actor was placed, and every node shares the
        folders shard files and cache rows are written to.
        """
        import socket

        return {
            "host": socket.gethostname(),
            "node": _node_id(),
            "unseen": [f for f in folders if not os.path.isdir(f)],
        }

    def _limit_threads(self) -> None:
        """Give TensorFlow as many threads as the cores this actor was given (before it starts)."""
        from bneck.core.tfimport import import_tensorflow

        try:
            import_tensorflow().config.threading.set_intra_op_parallelism_threads(self.threads)
        except RuntimeError:
            pass  # TensorFlow already running in this process

    def run(self, shard: dict, reference: dict | None = None) -> dict:
        """Extract one shard ({index, path, items: [(sha, image path)]}) into its file; returns counts.

        Before its first row, the worker checks its rows for ``reference`` images.
        """
        start = time.perf_counter()
        ex, items = self.extractor, [tuple(item) for item in shard["items"]]
        ex.cache.refresh()
        todo = missing_shas(ex.cache, (sha for sha, _ in items))
        first = {}
        for sha, path in items:
            first.setdefault(sha, path)
        failed = {}
        if todo:
            if ex.model is None:
                self._limit_threads()
            if reference is not None:
                self.check(reference)
            failed = ex.compute(f"shard {shard['index']}", [(sha, first[sha]) for sha in todo])
        kept = [sha for sha, _ in items if sha not in failed]
        if kept:
            out = []
            ex.cache.read_rows(kept, lambda _, block: out.append(block))
            write_rows_file(
                shard["path"],
                ex.spec.key,
                kept,
                np.concatenate(out),
                attrs={"failed": json.dumps(failed), "shard_index": shard["index"]},
            )
        return {
            "index": shard["index"],
            "computed": len(todo) - len(failed),
            "rows": len(kept),
            "failed": failed,
            "seconds": time.perf_counter() - start,
            "pid": os.getpid(),
            "node": _node_id(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "equivalence": self.equivalence,
        }


def _node_id() -> str:
    """The Ray node this actor runs on (its id), or "?" outside Ray."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a count for the report, never worth failing a shard
        return "?"
