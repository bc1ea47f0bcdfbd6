"""Greedy ensemble selection with replacement (Caruana et al. 2004), on validation predictions.

Round 1 takes the single model that scores best; every later round adds the model (one already
in the ensemble included) whose addition scores best, so a model's weight is how many rounds
chose it. The ensemble kept is the best-scoring prefix of the rounds (the earliest among
equals), and a score is validation accuracy first and log loss second: the ensemble is never
below the best single model on validation, by construction, because round 1 is that model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CRITERION = "validation accuracy, then validation log loss (a combination at equal accuracy: 1 % lower)"
MIN_LOSS_GAIN = 0.01  # relative: at equal validation accuracy, a combination must lower the log loss this much


@dataclass(frozen=True)
class Round:
    """One round of selection: the model it added and the validation scores of the ensemble after it."""

    added: str
    accuracy: float
    loss: float


@dataclass(frozen=True)
class Selection:
    """What selection chose: integer weights by model name, every round, and the round kept."""

    weights: dict[str, int]
    rounds: list[Round]
    kept_round: int  # 1-based: the ensemble is rounds[:kept_round]

    @property
    def single(self) -> str | None:
        """The model's name when selection kept one model alone, else None."""
        return next(iter(self.weights)) if len(self.weights) == 1 else None


def scores(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, log loss) of (N, C) probabilities against integer labels (probabilities clipped at 1e-7)."""
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return accuracy, float(-np.mean(np.log(picked)))


LOSS_TOLERANCE = 1e-9  # a lower loss by less than this is rounding (a model averaged with itself), not better


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether scores ``a`` beat ``b``: higher accuracy, or equal accuracy and a lower loss."""
    return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1] - LOSS_TOLERANCE)


def select(probabilities: dict[str, np.ndarray], labels: np.ndarray, rounds: int) -> Selection:
    """Run ``rounds`` rounds of selection over ``probabilities`` (name -> (N, C) validation probabilities,
    the same images in the same order) against ``labels``; ties go to the model listed first."""
    if not probabilities or rounds < 1:
        raise ValueError("selection needs at least one model and one round")
    labels = np.asarray(labels, dtype=np.int64)
    names = list(probabilities)
    stacked = np.stack([np.asarray(probabilities[n], np.float64) for n in names])
    total = np.zeros(stacked.shape[1:], np.float64)
    history: list[Round] = []
    for size in range(1, rounds + 1):
        best_index, best_scores = 0, None
        for index in range(len(names)):
            found = scores((total + stacked[index]) / size, labels)
            if best_scores is None or _better(found, best_scores):
                best_index, best_scores = index, found
        assert best_scores is not None
        total += stacked[best_index]
        history.append(Round(names[best_index], *best_scores))
    kept = 0
    for i, step in enumerate(history):
        if _better((step.accuracy, step.loss), (history[kept].accuracy, history[kept].loss)):
            kept = i
    single, chosen = history[0], history[kept]
    if chosen.accuracy == single.accuracy and chosen.loss > single.loss * (1 - MIN_LOSS_GAIN):
        kept = 0  # the same accuracy and about the same loss: the best single model alone
    weights: dict[str, int] = {}
    for step in history[: kept + 1]:
        weights[step.added] = weights.get(step.added, 0) + 1
    return Selection(weights, history, kept + 1)


def combine(probabilities: list[np.ndarray], weights: list[int]) -> np.ndarray:
    """The weighted mean of members' (N, C) probabilities: sum(w * p) / sum(w), in float64."""
    total = sum(int(w) * np.asarray(p, np.float64) for p, w in zip(probabilities, weights))
    return np.asarray(total / float(sum(weights)))
