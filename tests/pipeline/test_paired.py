"""The paired comparison of two models on the same test images, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from bneck.pipeline.paired import compare, mcnemar_exact

pytestmark = pytest.mark.pure


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (3, 10), (40, 20), (7, 7), (700, 650), (1100, 1000)])
def test_mcnemar_exact_equals_scipys_two_sided_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert math.isclose(mcnemar_exact(b, c), expected, rel_tol=1e-9, abs_tol=1e-300)


def test_gain_counts_and_interval_follow_from_the_discordant_pairs():
    rng = np.random.default_rng(0)
    second = rng.random(500) < 0.9
    first = second.copy()
    flip = rng.choice(500, 40, replace=False)
    first[flip] = ~first[flip]
    got = compare(first.tolist(), second.tolist())
    b, c = int((first & ~second).sum()), int((second & ~first).sum())
    assert (got.first_only, got.second_only, got.n) == (b, c, 500)
    assert math.isclose(got.gain, first.mean() - second.mean())
    # Agresti-Min: the paired Wald interval (sd of the per-image difference d in {-1, 0, 1}) on the
    # table with half an image added to each of its four cells
    d = first.astype(int) - second.astype(int)
    weights = np.r_[np.ones(len(d)), [0.5] * 4]
    d = np.r_[d, [1, -1, 0, 0]]  # the four added half images: b, c and the two concordant cells
    mean = np.average(d, weights=weights)
    sd = math.sqrt(np.average((d - mean) ** 2, weights=weights))
    half = 1.959963984540054 * sd / math.sqrt(weights.sum())
    assert math.isclose(got.low, mean - half) and math.isclose(got.high, mean + half)
    assert got.low < got.gain < got.high
    assert got.significant == (got.p_value < 0.05)


def test_identical_models_gain_nothing_and_are_not_significant():
    got = compare([True, False, True], [True, False, True])
    assert (got.gain, got.p_value, got.significant) == (0.0, 1.0, False)
    # no disagreement on 3 images is not proof of equality: the interval stays wide, around 0
    assert got.low < -0.2 and got.high > 0.2 and math.isclose(got.low, -got.high)
    assert "+0.0 points" in got.describe() and "not significant" in got.describe()


@pytest.mark.parametrize("right,n", [(0, 10), (3, 10), (10, 10), (978, 1000), (500, 1000), (1, 1)])
def test_wilson_interval_is_the_score_interval_and_holds_the_estimate(right, n):
    from bneck.pipeline.paired import wilson

    low, high = wilson(right, n)
    # the Wilson score interval solved directly: the p with |right/n - p| = z sqrt(p (1 - p) / n)
    z, phat = 1.959963984540054, right / n
    roots = np.roots([1 + z * z / n, -(2 * phat + z * z / n), phat * phat])
    assert np.allclose(sorted(np.real(roots)), [low, high], atol=1e-9)
    assert low <= phat <= high and 0.0 <= low and high <= 1.0


def test_a_clear_gain_is_significant_and_said_so():
    first = [True] * 100
    second = [True] * 80 + [False] * 20
    got = compare(first, second)
    assert got.gain == pytest.approx(0.2) and got.p_value < 1e-5 and got.significant
    assert "(significant at 5 %)" in got.describe()


@pytest.mark.parametrize("first,second", [([], []), ([True], [True, False])])
def test_unpaired_inputs_are_refused(first, second):
    with pytest.raises(ValueError, match="same images"):
        compare(first, second)
