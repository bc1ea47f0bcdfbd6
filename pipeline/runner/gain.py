"""What fine-tuning gained over the best frozen classifier, paired on the same test images."""
from __future__ import annotations

from typing import Optional

from ..artifacts import ArtifactError, read_predictions, read_verified
from ..paired import PairedComparison, compare


def test_correctness(folder: str, name: str = "predictions.csv") -> Optional[dict]:
    """Return {test image path: predicted right} from a verified model folder's predictions file
    ``name`` (None when the folder has none: made before bneck wrote one for every model)."""
    files = read_verified(folder).files
    if name not in files:
        return None
    try:
        rows = read_predictions(files[name].decode("utf-8", errors="replace"), f"{folder}/{name}")
    except ArtifactError:
        return None  # nothing to pair with: the leaderboard leaves the gain empty
    return {r["path"]: r["true"] == r["predicted"] for r in rows if r["split"] == "test"}


def paired_gain(finetuned: str, frozen: str, predictions: str = "predictions.csv") -> Optional[PairedComparison]:
    """Compare the fine-tuned model in ``finetuned`` (its ``predictions`` file) with the classifier in
    ``frozen`` on the test images both scored (by path); None when either has no test predictions
    or they share none."""
    first, second = test_correctness(finetuned, predictions), test_correctness(frozen)
    if not first or not second:
        return None
    shared = sorted(set(first) & set(second))
    if not shared:
        return None
    return compare([first[p] for p in shared], [second[p] for p in shared])
