"""What fine-tuning gained over the best frozen classifier, paired on the run's own test images.

The pairing trusts nothing a model folder says about the data: the images and their
true classes are the run's (its test feature file), each model's predictions file must
score exactly those images, and the accuracy it implies must equal the one its metrics
report (the leaderboard's). Anything else leaves the gain empty and says why.
"""

from __future__ import annotations

import os

from bneck.pipeline.artifacts import ArtifactError, read_verified
from bneck.pipeline.paired import PairedComparison, compare
from bneck.pipeline.predictions_csv import read_predictions


def run_test_truth(out: str) -> dict:
    """{path: true class name} of a run's test images, from its own test feature file (empty without)."""
    from bneck.features import read_summary

    path = os.path.join(out, "features", "test.h5")
    if not os.path.isfile(path):
        return {}
    summary = read_summary(path)
    names = summary["class_names"]
    return {p: names[int(label)] for p, label in zip(summary["paths"], summary["labels"])}


def test_correctness(
    folder: str, name: str, truth: dict, accuracy: float | None, verified: dict | None = None
) -> tuple[dict | None, str]:
    """Return ({test image path: predicted right}, "") from the verified folder's predictions file
    ``name``, judged against ``truth`` (path -> true class); or (None, why it cannot be used).
    ``verified`` (folder -> its files) keeps each folder verified once across calls."""
    if verified is None:
        verified = {}
    if folder not in verified:
        verified[folder] = read_verified(folder).files
    files = verified[folder]
    if name not in files:
        return None, f"{folder} holds no {name} (made before bneck wrote one for every model)"
    try:
        rows = read_predictions(files[name].decode("utf-8", errors="replace"), f"{folder}/{name}")
    except ArtifactError as exc:
        return None, str(exc)
    test = {r["path"]: r["predicted"] for r in rows if r["split"] == "test"}
    if set(test) != set(truth):
        return None, f"{folder}/{name} does not score exactly the run's {len(truth)} test images"
    right = {path: test[path] == truth[path] for path in truth}
    if accuracy is None or abs(sum(right.values()) / len(right) - accuracy) > 1e-9:
        return None, f"{folder}/{name} disagrees with the test accuracy in its own metrics"
    return right, ""


def predictions_file(result) -> str:
    """The predictions file a leaderboard row scores with (its TTA file for a TTA row)."""
    return "predictions_tta.csv" if result.name.endswith("+ mirror TTA") else "predictions.csv"


def paired_gain(
    finetuned, frozen, truth: dict, predictions: str = "predictions.csv", verified: dict | None = None
) -> tuple[PairedComparison | None, str]:
    """Compare the first model (a leaderboard Result; its ``predictions`` file) with the second
    (its ``predictions.csv``) on the run's test images ``truth`` (path -> true class).
    Returns (the comparison, "") or (None, why there is none)."""
    if not truth:
        return None, "the run has no test split"
    first, why = test_correctness(finetuned.folder, predictions, truth, finetuned.accuracy("test"), verified)
    if first is None:
        return None, why
    second, why = test_correctness(frozen.folder, predictions_file(frozen), truth, frozen.accuracy("test"), verified)
    if second is None:
        return None, why
    paths = sorted(truth)
    return compare([first[p] for p in paths], [second[p] for p in paths]), ""


def winner_versus_runner_up(leaderboard: list, truth: dict, verified: dict | None = None) -> str:
    """One sentence: is the model ranked first (by validation) better on test than the second, paired
    on the same images? Said plainly when the difference is within noise."""
    if len(leaderboard) < 2:
        return ""
    first, second = leaderboard[0], leaderboard[1]
    found, why = paired_gain(first, second, truth, predictions_file(first), verified)
    if found is None:
        return f"{first.name} against the runner-up {second.name}: no paired comparison ({why})."
    verdict = (
        "better on test, and the difference is significant"
        if found.significant and found.gain > 0
        else "worse on test, significantly"
        if found.significant
        else "not distinguishable on test: the difference is within noise"
    )
    return f"{first.name} (first on validation) against the runner-up {second.name}: {found.describe()}; {verdict}."
