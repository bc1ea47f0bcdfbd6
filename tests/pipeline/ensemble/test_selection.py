"""Greedy ensemble selection on made-up validation predictions, checked against direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from bneck.pipeline.ensemble.selection import combine, select

pytestmark = pytest.mark.pure


def _accuracy_and_loss(p: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Computed here, independently: top-1 accuracy and the mean negative log probability of the truth."""
    right = sum(int(np.argmax(row) == y) for row, y in zip(p, labels)) / len(labels)
    loss = -sum(np.log(max(row[y], 1e-7)) for row, y in zip(p, labels)) / len(labels)
    return right, loss


def _random_problem(rng, models: int, images: int, classes: int):
    labels = rng.integers(0, classes, images)
    probabilities = {}
    for m in range(models):
        logits = rng.normal(size=(images, classes)) + rng.uniform(0, 3) * np.eye(classes)[labels]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities[f"m{m}"] = e / e.sum(axis=1, keepdims=True)
    return probabilities, labels


@pytest.mark.parametrize("seed", range(40))
def test_the_kept_ensemble_is_never_below_the_best_single_model_and_its_scores_are_its_weights(seed):
    rng = np.random.default_rng(seed)
    probabilities, labels = _random_problem(
        rng, int(rng.integers(2, 7)), int(rng.integers(5, 60)), int(rng.integers(2, 5))
    )
    rounds = int(rng.integers(1, 30))
    chosen = select(probabilities, labels, rounds)
    singles = {n: _accuracy_and_loss(p, labels) for n, p in probabilities.items()}
    best = max(singles.values(), key=lambda s: (s[0], -s[1]))
    mixed = sum(w * probabilities[n] for n, w in chosen.weights.items()) / sum(chosen.weights.values())
    accuracy, loss = _accuracy_and_loss(mixed, labels)
    if chosen.single is not None:  # one model alone: the best one
        assert (accuracy, loss) == pytest.approx(best)
    else:  # a combination: better on validation, in accuracy or by 1 % of log loss at equal accuracy
        assert accuracy > best[0] or (accuracy == best[0] and loss <= best[1] * 0.99 + 1e-12)
    assert sum(chosen.weights.values()) == chosen.kept_round <= rounds == len(chosen.rounds)
    assert all(isinstance(w, int) and w >= 1 for w in chosen.weights.values())
    kept = chosen.rounds[chosen.kept_round - 1]
    assert kept.accuracy == pytest.approx(accuracy) and kept.loss == pytest.approx(loss, rel=1e-9)
    assert (chosen.rounds[0].accuracy, chosen.rounds[0].loss) == pytest.approx(best)  # round 1: the best single
    # every round's recorded scores are those of the running mean of the models added so far
    counts: dict[str, int] = {}
    for i, r in enumerate(chosen.rounds, 1):
        counts[r.added] = counts.get(r.added, 0) + 1
        running = sum(c * probabilities[n] for n, c in counts.items()) / i
        assert (r.accuracy, r.loss) == pytest.approx(_accuracy_and_loss(running, labels))


def test_models_wrong_on_different_images_are_combined_into_one_right_on_all():
    """Three models, each confidently wrong on its own third of 30 images: any two of them averaged are
    right everywhere (0.9 for the truth beats 0.6 against it), so round 2 reaches 100 % and what is kept
    combines them (with the third too when it lowers the log loss further)."""
    labels = np.array([0, 1] * 15)
    probabilities = {}
    for m, name in enumerate(("a", "b", "c")):
        p = np.where(np.eye(2)[labels] == 1, 0.9, 0.1)
        wrong = np.arange(30)[m * 10 : (m + 1) * 10]
        p[wrong] = np.where(np.eye(2)[labels[wrong]] == 1, 0.4, 0.6)
        probabilities[name] = p
    chosen = select(probabilities, labels, 10)
    assert all(_accuracy_and_loss(p, labels)[0] == pytest.approx(2 / 3) for p in probabilities.values())
    assert chosen.rounds[0].added == "a" and chosen.rounds[1].added == "b" and chosen.rounds[1].accuracy == 1.0
    assert chosen.single is None and len(chosen.weights) >= 2
    mixed = sum(w * probabilities[n] for n, w in chosen.weights.items()) / chosen.kept_round
    assert _accuracy_and_loss(mixed, labels)[0] == 1.0


def test_a_model_better_than_any_mixture_is_kept_alone():
    labels = np.array([0, 1, 0, 1, 1, 0])
    perfect = np.eye(2)[labels] * 0.98 + 0.01
    noisy = np.full((6, 2), 0.5)
    noisy[:, 0] += 0.01
    chosen = select({"noisy": noisy, "perfect": perfect}, labels, 25)
    assert chosen.weights == {"perfect": 1} and chosen.single == "perfect" and chosen.kept_round == 1


def test_combine_is_the_weighted_mean():
    a, b = np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])
    assert combine([a, b], [3, 1]) == pytest.approx(np.array([[0.3, 0.7]]))


def test_selection_needs_a_model_and_a_round():
    with pytest.raises(ValueError):
        select({}, np.array([0]), 3)
    with pytest.raises(ValueError):
        select({"a": np.array([[1.0, 0.0]])}, np.array([0]), 0)


def test_a_combination_that_only_rounds_the_loss_down_is_not_kept():
    """At equal validation accuracy a combination must lower the log loss by 1 %: a near copy of the best
    model (0.05 % lower loss when mixed in) is noise, and would make a second model predicting as the first."""
    labels = np.array([0, 1] * 20)
    best = np.where(np.eye(2)[labels] == 1, 0.8, 0.2)
    best[:4] = best[:4, ::-1]  # wrong on 4 of 40 images
    copy = best.copy()
    copy[10:] = np.where(np.eye(2)[labels[10:]] == 1, 0.8002, 0.1998)
    chosen = select({"best": best, "copy": copy}, labels, 10)
    assert chosen.rounds[0].added == "copy"  # a hair better on its own, so round 1 takes it
    assert chosen.single == "copy" and chosen.kept_round == 1
    helpful = best.copy()
    helpful[:4] = helpful[:4, ::-1] * 0 + np.eye(2)[labels[:4]] * 0.9 + 0.05  # right where best is wrong
    helpful[4:8] = helpful[4:8, ::-1]  # and wrong on 4 others: alone, as good as best
    chosen = select({"best": best, "helpful": helpful}, labels, 10)
    assert chosen.single is None and chosen.rounds[chosen.kept_round - 1].accuracy > 0.9
