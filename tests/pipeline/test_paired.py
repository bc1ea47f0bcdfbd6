"""The paired comparison of two models on the same test images, against independent computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from pipeline.paired import compare, mcnemar_exact

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
    # the paired (Wald) interval: sd of the per-image difference d in {-1, 0, 1}
    d = first.astype(int) - second.astype(int)
    half = 1.959963984540054 * d.std() / math.sqrt(len(d))
    assert math.isclose(got.low, d.mean() - half) and math.isclose(got.high, d.mean() + half)
    assert got.low < got.gain < got.high
    assert got.significant == (got.p_value < 0.05)


def test_identical_models_gain_nothing_and_are_not_significant():
    got = compare([True, False, True], [True, False, True])
    assert (got.gain, got.low, got.high, got.p_value, got.significant) == (0.0, 0.0, 0.0, 1.0, False)
    assert "+0.0 points" in got.describe() and "not significant" in got.describe()


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
