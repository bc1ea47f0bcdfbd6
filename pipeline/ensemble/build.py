"""``bneck ensemble``: select a weighted ensemble of model folders on validation and write its folder.

The folder is a model folder like the others (written staged, hashed into its manifest): the
manifest lists the members by the sha256 of their manifests, with their weights, every candidate
with its own validation scores, and every round of selection; ``predictions.csv``,
``metrics.json``, ``splits.json`` and the confusion plots are the ensemble's own, computed from
the members' saved predictions (test read once, after selection). Members are referred to by
their folder's path relative to the ensemble's, so a run folder moved whole still works.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from bneck.core.folders import check_folder, staged_folder
from bneck.core.options import takes_options
from bneck.pipeline.artifacts import read_verified, write_json, write_manifest
from bneck.pipeline.ensemble.members import Candidate, aligned, checked_paths, common_splits, read_candidates
from bneck.pipeline.ensemble.options import ENSEMBLE
from bneck.pipeline.ensemble.selection import CRITERION, Selection, combine, select
from bneck.pipeline.ensemble.selection import scores as validation_scores
from bneck.pipeline.image_splits import write_splits
from bneck.pipeline.manifests import ENSEMBLE_MODEL, ArtifactError, CandidateRef, EnsembleManifest, MemberRef, RoundRef
from bneck.pipeline.metrics import scores
from bneck.pipeline.paired import PairedComparison, compare
from bneck.pipeline.predictions_csv import write_predictions

log = logging.getLogger(__name__)


@dataclass
class EnsembleResult:
    """What selection chose and where it was written (``folder`` is '' when nothing was written)."""

    folder: str
    selection: Selection
    candidates: list[Candidate]
    metrics: dict
    seconds: float
    gain: PairedComparison | None = None  # over the best single model, on the test images
    reused: bool = False

    @property
    def members(self) -> list[tuple[str, int]]:
        """(name, weight) of each member, heaviest first."""
        return sorted(self.selection.weights.items(), key=lambda item: -item[1])

    def describe(self) -> str:
        """'2 x fine-tuned gap-dense + 1 x svm (3 of 25 rounds kept)'."""
        parts = " + ".join(f"{w} x {name}" for name, w in self.members)
        return f"{parts} ({self.selection.kept_round} of {len(self.selection.rounds)} rounds kept)"


def scored(candidates: list[Candidate], selection: Selection) -> tuple[dict, dict]:
    """The ensemble's metrics and probabilities ((paths, labels, (N, C)) by split) on every split its
    candidates share; test is read here, once, after selection."""
    chosen = [c for c in candidates if c.name in selection.weights]
    weights = [selection.weights[c.name] for c in chosen]
    class_names = candidates[0].manifest.class_names
    probabilities, metrics = {}, {}
    for split in common_splits(candidates):
        paths, labels, arrays = aligned(chosen, split)
        probabilities[split] = (paths, labels, combine(arrays, weights))
        metrics[split] = scores(labels, probabilities[split][2], class_names)
    return metrics, probabilities


def select_on_validation(candidates: list[Candidate], max_size: int) -> Selection:
    """Greedy selection over the candidates' validation predictions."""
    _, labels, arrays = aligned(candidates, "validation")
    return select({c.name: a for c, a in zip(candidates, arrays)}, labels, max_size)


@takes_options(ENSEMBLE)
def make_ensemble(
    model_dirs: list[str],
    out: str,
    *,
    max_size: int = 25,
    names: list[str] | None = None,
    write_single: bool = True,
    verbose: bool = True,
) -> EnsembleResult:
    """Select an ensemble of ``model_dirs`` by greedy selection on their validation predictions and write
    it into ``out`` (unless selection keeps one model and not ``write_single``); returns what it chose.

    ``names`` name the members (default: each folder's classifier, 'fine-tuned HEAD' for a fine-tuned
    model). Raises ConfigError for a bad option or --out, ArtifactError for a folder that fails its
    check, EnsembleError for folders that are not of one extractor and the same images; all before
    anything is written.
    """
    start = time.perf_counter()
    model_dirs = checked_paths(model_dirs)
    final = check_folder(out, "ensemble", inputs=model_dirs)
    candidates = read_candidates(model_dirs, names)
    selection = select_on_validation(candidates, max_size)
    if selection.single is None or write_single:
        if _unchanged(final, candidates, selection, max_size):
            result, _ = _result(final, candidates, selection)
            result.reused = True
        else:
            result = write_ensemble(final, candidates, selection, max_size)
    else:
        result, _ = _result("", candidates, selection)
    result.seconds = time.perf_counter() - start
    if verbose:
        log.info(summary(result))
    return result


def _result(folder: str, candidates: list[Candidate], selection: Selection) -> tuple[EnsembleResult, dict]:
    """The ensemble ``selection`` chose, scored on every shared split with its paired test gain, and its
    probabilities by split (what ``write_ensemble`` writes)."""
    metrics, probabilities = scored(candidates, selection)
    gain = _gain(candidates, selection, probabilities)
    return EnsembleResult(folder, selection, candidates, metrics, 0.0, gain), probabilities


def _unchanged(final: str, candidates: list[Candidate], selection: Selection, max_size: int) -> bool:
    """Whether ``final`` already holds this ensemble: chosen among the same candidates (names and manifest
    sha256, in order) with the same settings, giving the same weights. Then it is kept as it is."""
    from bneck.core.folders import folder_kind

    if folder_kind(final) != "ensemble":
        return False
    try:
        manifest = read_verified(final).manifest
    except ArtifactError:
        return False
    return (
        isinstance(manifest, EnsembleManifest)
        and manifest.config == {"max_size": max_size, "criterion": CRITERION}
        and [(c.name, c.manifest_sha256) for c in manifest.candidates]
        == [(c.name, c.manifest_sha256) for c in candidates]
        and {m.name: m.weight for m in manifest.members} == selection.weights
        and manifest.made_in == os.path.realpath(final)
    )


def write_ensemble(final: str, candidates: list[Candidate], selection: Selection, max_size: int) -> EnsembleResult:
    """Write the ensemble ``selection`` chose among ``candidates`` into the folder ``final``; returns it."""
    from bneck.pipeline.plots import confusion_plots

    result, probabilities = _result(final, candidates, selection)
    metrics, class_names = result.metrics, candidates[0].manifest.class_names
    with staged_folder(final, "ensemble", inputs=[c.folder for c in candidates]) as folder:
        write_json(os.path.join(folder, "metrics.json"), {**metrics, "fit_seconds": 0.0})
        write_predictions(os.path.join(folder, "predictions.csv"), class_names, probabilities)
        write_splits(folder, _splits_record(candidates))
        confusion_plots(metrics, class_names, folder, "ensemble")
        write_manifest(folder, _manifest(final, result, max_size))
    return result


def _gain(candidates: list[Candidate], selection: Selection, probabilities: dict) -> PairedComparison | None:
    """The ensemble against the best single model (round 1's), paired on the test images; None without."""
    if "test" not in probabilities or selection.single is not None:
        return None
    paths, labels, mixed = probabilities["test"]
    best = next(c for c in candidates if c.name == selection.rounds[0].added).predictions["test"]
    row = {p: i for i, p in enumerate(best.paths)}
    theirs = best.probabilities[[row[p] for p in paths]]
    return compare(list(mixed.argmax(axis=1) == labels), list(theirs.argmax(axis=1) == labels))


def why_kept(result: EnsembleResult) -> str:
    """Why the kept ensemble beat the best single model on validation, or why one model was kept alone."""
    first = result.selection.rounds[0]
    kept = result.selection.rounds[result.selection.kept_round - 1]
    if result.selection.single:
        return (
            f"selection kept {result.selection.single} alone: no weighted combination of the "
            f"{len(result.candidates)} models found in {len(result.selection.rounds)} rounds scored higher on "
            f"validation ({100 * first.accuracy:.1f}%; at equal accuracy a combination needs a 1 % lower log loss)"
        )
    if kept.accuracy > first.accuracy:
        return f"validation {100 * kept.accuracy:.1f}% against {100 * first.accuracy:.1f}% for {first.added}"
    return (
        f"validation {100 * kept.accuracy:.1f}%, the same as {first.added}'s, with a lower log loss "
        f"({kept.loss:.3f} against {first.loss:.3f})"
    )


def summary(result: EnsembleResult) -> str:
    """What was selected, why (against the best single model on validation), its paired test gain, and where."""
    if result.selection.single:
        said = why_kept(result)
    else:
        said = f"ensemble {result.describe()}: {why_kept(result)}, the best single model"
        if result.gain is not None:
            said += f"; test, paired: {result.gain.describe()}"
    return said + (f"; written to {result.folder}" if result.folder else "")


def _manifest(final: str, result: EnsembleResult, max_size: int) -> EnsembleManifest:
    candidates, selection = result.candidates, result.selection
    first = candidates[0]
    stage2 = next((c for c in candidates if c.manifest.kind != "finetuned"), first)
    by_name = {c.name: c for c in candidates}
    return EnsembleManifest(
        kind="ensemble",
        classifier="ensemble",
        model_file=ENSEMBLE_MODEL,
        config={"max_size": max_size, "criterion": CRITERION},
        class_names=list(first.manifest.class_names),
        extractor_key=first.manifest.extractor_key,
        extractor=first.manifest.extractor,
        weights_path=stage2.manifest.weights_path,
        metrics={
            s: {"accuracy": m["accuracy"], "loss": m["loss"], "macro_f1": m["macro_f1"]}
            for s, m in result.metrics.items()
        },
        members=[
            MemberRef(
                name=name,
                folder=os.path.relpath(os.path.realpath(by_name[name].folder), os.path.realpath(final)),
                kind=by_name[name].manifest.kind,
                classifier=by_name[name].manifest.classifier,
                manifest_sha256=by_name[name].manifest_sha256,
                weight=weight,
            )
            for name, weight in selection.weights.items()
        ],
        candidates=[_candidate_ref(c) for c in candidates],
        rounds=[RoundRef(r.added, r.accuracy, r.loss) for r in selection.rounds],
        kept_round=selection.kept_round,
        made_in=os.path.realpath(final),
    )


def _candidate_ref(candidate: Candidate) -> CandidateRef:
    part = candidate.predictions["validation"]
    accuracy, loss = validation_scores(part.probabilities, part.labels)
    return CandidateRef(candidate.name, candidate.manifest_sha256, accuracy, loss)


def _splits_record(candidates: list[Candidate]) -> dict:
    """The first member's record of images, its train split the union of every member's (by sha256): what
    ``predict`` says an image was seen in."""
    record = dict(candidates[0].record)
    splits = {s: dict(part) for s, part in record["splits"].items()}
    train: dict[str, tuple[str, int]] = {}
    for c in candidates:
        part = c.record["splits"].get("train") or {"paths": [], "sha256": [], "labels": []}
        for p, sha, label in zip(part["paths"], part["sha256"], part["labels"]):
            train.setdefault(sha, (p, int(label)))
    if train:
        splits["train"] = {
            "paths": [p for p, _ in train.values()],
            "sha256": list(train),
            "labels": [label for _, label in train.values()],
        }
    record["splits"] = splits
    return record
