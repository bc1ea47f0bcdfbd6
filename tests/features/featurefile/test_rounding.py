"""Rounding fine-tuning views (``featurefile.storage.round_mantissa``) against an independent rounding."""

from __future__ import annotations

import numpy as np
import pytest

from bneck.features.featurefile.storage import ROUNDED_DTYPES, round_rows, rounding_error

pytestmark = pytest.mark.pure


def nearest_with_significant_bits(values: np.ndarray, significant: int) -> np.ndarray:
    """An independent rounding of normal float32 values to ``significant`` bits (ties to even), through
    frexp: values = m * 2**e with 0.5 <= |m| < 1, and m * 2**significant rounded half to even."""
    m, e = np.frexp(values.astype(np.float64))
    return np.ldexp(np.round(m * 2.0**significant) / 2.0**significant, e).astype(np.float32)


@pytest.mark.parametrize("dtype", sorted(ROUNDED_DTYPES))
def test_rounded_rows_are_the_nearest_with_their_significant_bits(dtype):
    rng = np.random.default_rng(1)
    significant = ROUNDED_DTYPES[dtype] + 1
    values = (rng.normal(size=20000) * 10.0 ** rng.integers(-30, 30, 20000)).astype(np.float32)
    # exact ties between two neighbours, both ways: ties go to the even one
    ulp = 2.0 ** -(significant - 1)  # between 1 and the next value with that many significant bits
    ties = np.array([1 + ulp / 2, 1 + 3 * ulp / 2, -(1 + ulp / 2)], np.float32)
    values = np.concatenate([values, ties])
    rounded = round_rows(values, dtype)
    np.testing.assert_array_equal(rounded, nearest_with_significant_bits(values, significant))
    np.testing.assert_array_equal(rounded[-3:], [1.0, 1 + 2 * ulp, -1.0])
    assert np.all(np.abs(rounded - values) <= np.abs(values) * rounding_error(dtype))
    assert np.all(np.abs(rounded - values) <= np.abs(values) * 2.0**-significant)


@pytest.mark.parametrize("dtype", sorted(ROUNDED_DTYPES))
def test_rounding_keeps_zeros_infinities_and_nan_and_overflows_as_a_cast_does(dtype):
    top = np.finfo(np.float32).max
    values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, top, -top], np.float32)
    rounded = round_rows(values, dtype)
    np.testing.assert_array_equal(rounded[:5], values[:5])
    assert np.signbit(rounded[1]) and not np.signbit(rounded[0])
    assert rounded[5] == np.inf and rounded[6] == -np.inf  # float32's largest rounds beyond it


def test_unrounded_dtypes_are_left_as_they_are():
    values = np.random.default_rng(0).normal(size=100).astype(np.float32)
    assert round_rows(values, "float32") is values and rounding_error("float32") == 0.0
