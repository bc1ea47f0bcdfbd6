"""One Extractor: the network (built lazily, checked against the reference runtime before its
first row) and the loop that turns images into committed cache rows.

The local engine, every Ray actor (``ray_actor.ShardExtractor``) and the split files'
attributes all go through this one class; it is built whole by its constructor and
changed only through its own methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bneck.core.errors import DatasetError
from bneck.core.progress import progress_bar
from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.cache.rows import RowCache, RowWriter
from bneck.features.featurefile.format import SplitContent
from bneck.features.images.batches import decoded_batches
from bneck.features.images.dataset import Dataset

# A runtime slower than the reference by more than this on its check images is not taken by --runtime auto
# (timings of a few images vary by some percent from run to run).
SLOWER_MARGIN = 1.1


def slower_than_reference(check: dict | None) -> bool:
    """Whether a runtime's check timed it slower than the reference (beyond ``SLOWER_MARGIN``); a check
    recorded before timings were, or without them, says no."""
    if not check or not all(isinstance(check.get(k), int | float) for k in ("seconds", "reference_seconds")):
        return False
    return check["seconds"] > SLOWER_MARGIN * check["reference_seconds"] > 0


class Extractor:
    """The cache and the lazily built network of one extraction (or of one Ray actor).

    ``workers`` decoding threads (0: all cores); rows are committed every
    ``commit_rows`` rows or ``commit_seconds`` seconds. ``check_sample`` lists image
    paths a new runtime is compared on before its first row. ``file_attrs`` are
    written into every split file (runtime, precision, engine, the checks made).
    """

    def __init__(
        self,
        spec: ExtractorSpec,
        cache: RowCache,
        *,
        batch_size: int = 32,
        workers: int = 0,
        commit_rows: int = 1024,
        commit_seconds: float = 20.0,
        verbose: bool = True,
        runtime: str = "tensorflow",
        plan=None,
        check_sample: Sequence[str] = (),
        file_attrs: dict | None = None,
        fallback: bool = False,
        runtime_why: str = "",
    ):
        self.spec, self.cache, self.runtime, self.plan = spec, cache, runtime, plan
        # fallback (--runtime auto): an OpenVINO model whose numbers differ from TensorFlow's here is
        # not an error; TensorFlow computes the rows instead, and the report says why.
        self.fallback, self.runtime_why = fallback, runtime_why
        self.batch_size, self.workers, self.verbose = batch_size, workers, verbose
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self.check_sample = list(check_sample)
        self.file_attrs = dict(file_attrs or {})
        self.model = None

    def network(self):
        """Return the feature model, built by its runtime (``runtimes.registry``), checked against the
        reference and traced on first use.

        Raises RuntimeMismatch (before any row is made) when a runtime's features differ from the
        reference's on ``check_sample`` beyond the tolerance; with ``fallback`` (``--runtime auto``)
        the reference computes the rows instead, and ``runtime_why`` says why.
        """
        if self.model is None:
            from bneck.features.runtimes.equivalence import RuntimeMismatch
            from bneck.features.runtimes.registry import BuildContext, build_model, get_registered, reference_runtime

            context = BuildContext(self.cache.cache_dir, self.plan, self.workers, self.decoded_sample, self.verbose)
            try:
                model = build_model(self.runtime, self.spec, context)
            except RuntimeMismatch as exc:
                if not self.fallback:
                    raise
                refused, reference = get_registered(self.runtime).label, reference_runtime()
                self.runtime = self.file_attrs["runtime"] = reference.name
                self.runtime_why = (
                    f"auto: {refused} was refused on this CPU ({str(exc)[:160]}...), so {reference.label} ran"
                )
                model = build_model(self.runtime, self.spec, context)
            if self.fallback and slower_than_reference(model.equivalence):
                model = self._reference_instead(model, context)
            if model.equivalence is not None:
                self.record_check("equivalence", model.equivalence)
            self.model = model
        return self.model

    def _reference_instead(self, slower, context):
        """The reference runtime's model, for ``--runtime auto``, when ``slower`` timed slower on its check."""
        from bneck.features.runtimes.registry import build_model, get_registered, reference_runtime

        label, reference = get_registered(self.runtime).label, reference_runtime()
        eq = slower.equivalence
        per_image = [1000 * eq[k] / max(eq["images"], 1) for k in ("seconds", "reference_seconds")]
        self.runtime = self.file_attrs["runtime"] = reference.name
        self.runtime_why = (
            f"auto: {label} ran this backbone slower than {reference.label} on this CPU ({per_image[0]:.1f} against "
            f"{per_image[1]:.1f} ms an image on its check images), so {reference.label} ran"
        )
        return build_model(self.runtime, self.spec, context)

    def record_check(self, name: str, result: dict | list) -> None:
        """Record a check of the rows (``equivalence``, ``quantization_check``) in every split file."""
        self.file_attrs[name] = result

    def decoded_sample(self) -> np.ndarray:
        """Return the decoded check sample (uint8), skipping images that do not decode."""
        batches = [
            b
            for _, b, _ in decoded_batches(
                [(p, p) for p in self.check_sample], self.spec.input_size, len(self.check_sample) or 1, self.workers
            )
            if len(b)
        ]
        if not batches:
            raise DatasetError("none of the images sampled to check the runtime could be decoded.")
        return np.concatenate(batches)

    def compute(self, label: str, todo: list[tuple[str, str]]) -> dict[str, str]:
        """Run the network on (sha, path) items, committing rows; returns {sha: failure reason}."""
        failed: dict[str, str] = {}
        if not todo:
            return failed
        # Build and trace the network while the first images are being decoded. The build is always
        # waited for before returning (below), even when no image decoded: a build left running
        # would draw from the process's random state while the next stage seeds and draws from it.
        builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bneck-build")
        building = builder.submit(self.network)
        model = None
        bar = progress_bar(len(todo), f"{label}: computing", self.verbose)
        try:
            with RowWriter(self.cache, self.commit_rows, self.commit_seconds) as rows:
                for shas, batch, failures in decoded_batches(
                    todo, self.spec.input_size, self.batch_size, self.workers, keys_are_sha256=True
                ):
                    failed.update(failures)
                    if shas:
                        model = model or building.result()
                        rows.add(shas, model(batch))
                    bar.update(len(shas) + len(failures))
        finally:
            bar.close()
            builder.shutdown(wait=True)  # nothing of this stage keeps running behind the next one
        return failed

    def split_attrs(self, dataset: Dataset) -> dict:
        """Return the attributes of a split file of ``dataset`` made by this extractor."""
        spec = self.spec
        attrs = dict(spec.describe(), **self.file_attrs)
        # weights_path is where the weights were read from: informative (later stages look
        # there first, and check the bytes by weights_sha256), never part of the key.
        attrs.update(
            extractor=spec.describe(),
            extractor_key=spec.key,
            weights_path=spec.weights_path or "",
            class_names=dataset.class_names,
            data_root=dataset.root,
            layout=dataset.layout,
            split_spec=dataset.split_spec,
            excluded_classes=dataset.excluded_classes,
        )
        return attrs


def split_content(dataset: Dataset, split: str, usable: list, failed: dict, quarantine: list) -> SplitContent:
    """Return the split's rows in output order: the usable (record, sha) pairs whose image
    decoded, with those that did not added to ``quarantine`` with their reason.

    Raises DatasetError when no image is left.
    """
    kept = [(r, sha) for r, sha in usable if sha not in failed]
    quarantine = quarantine + [(r.path, failed[sha]) for r, sha in usable if sha in failed]
    if not kept:
        raise DatasetError(
            f"every image of split {split!r} under {dataset.root} was quarantined "
            f"({len(quarantine)} files); first: {quarantine[:1]}."
        )
    return SplitContent(
        split, [r.path for r, _ in kept], [r.label for r, _ in kept], [sha for _, sha in kept], sorted(quarantine)
    )
