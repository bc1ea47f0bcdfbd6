"""When rows count as the same numbers: per row, relative to the reference row, NaN never hides."""

from __future__ import annotations

import numpy as np
import pytest

from bneck.features.runtimes.equivalence import (
    CHECK_TOLERANCE,
    TOLERANCE,
    RuntimeMismatch,
    compare,
    relative_differences,
)

pytestmark = pytest.mark.pure


def test_differences_are_per_row_and_relative():
    ref = np.array([[1.0, 2.0], [100.0, 0.0], [0.0, 0.0]])
    got = np.array([[1.0, 2.002], [100.5, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(relative_differences(got, ref), [0.001, 0.005, 0.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_row_that_is_not_finite_differs_infinitely_and_hides_nothing(bad):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 8))
    got = ref.copy()
    got[1] *= 3  # a forged row
    for side in (got, ref):
        tampered = side.copy()
        tampered[0, 0] = bad
        pair = (tampered, ref) if side is got else (got, tampered)
        diffs = relative_differences(*pair)
        assert np.isinf(diffs[0]) and diffs[1] > TOLERANCE and diffs[2] == diffs[3] == 0


def test_compare_refuses_beyond_the_tolerance_naming_what_and_where():
    ref = np.ones((3, 5))
    # a runtime is judged on its sample by CHECK_TOLERANCE, well inside what rows under one key may differ by
    assert compare(ref * (1 + CHECK_TOLERANCE / 10), ref, "a runtime", "here")["passed"]
    with pytest.raises(RuntimeMismatch, match="a runtime on here gives features that differ"):
        compare(ref * (1 + CHECK_TOLERANCE * 2), ref, "a runtime", "here")
    assert CHECK_TOLERANCE * 2 < TOLERANCE
