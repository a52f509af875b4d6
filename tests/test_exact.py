"""Exactness at large mean/std against an exact rational reference.

README's claim: the variance is within 1e-14 relative of the exact value of
the stored float64 data at mean/std = 1e8, and within 1e-6 for float32 data
at mean/std = 1e4 — for every kernel shape (rows, columns, NCHW,
channels-last, ``axis=None``), each statistic spanning several blocks and
chunks, so that block and chunk merges are exercised.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import nbnorm

from exact import exact_moments, relative_error
from helpers import channels_last, stat_dtype

BOUNDS = [(np.float64, 1e8, 1e-14), (np.float32, 1e4, 1e-6)]


def layouts(dtype, loc, seed):
    rng = np.random.default_rng(seed)

    def draw(shape):
        return (loc + rng.standard_normal(shape)).astype(dtype)

    nchw = draw((16, 2, 48, 48))
    return {"rows": (draw((2, 70000)), 1), "columns": (draw((70000, 2)), 0),
            "nchw": (nchw, (0, 2, 3)), "channels-last": (channels_last(nchw), (0, 2, 3)),
            "axis=None": (draw((300, 500)), None)}


@pytest.mark.parametrize("dtype,loc,bound", BOUNDS)
@pytest.mark.parametrize("layout", ["rows", "columns", "nchw", "channels-last", "axis=None"])
def test_moments_variance_is_exact_at_large_offset(dtype, loc, bound, layout):
    for seed in range(2):
        x, axis = layouts(dtype, loc, seed)[layout]
        exact_mean, exact_var = exact_moments(x, axis)
        mean, var = nbnorm.moments(x, axis)
        assert relative_error(var, exact_var) < bound
        assert relative_error(mean, exact_mean) < 2 * np.finfo(mean.dtype).eps


@pytest.mark.parametrize("dtype,loc,bound", BOUNDS)
@pytest.mark.parametrize("layout", ["rows", "columns", "nchw", "channels-last", "axis=None"])
def test_forward_statistics_are_exact_at_large_offset(dtype, loc, bound, layout):
    """The forward pass's own statistics (the fused kernel for NCHW): with
    momentum 1 the running statistics are the batch mean and the unbiased
    batch variance, each rounded to the statistics' dtype."""
    x, axis = layouts(dtype, loc, 2)[layout]
    exact_mean, exact_var = exact_moments(x, axis)
    n = x.size // exact_var.size
    rm = np.zeros(exact_var.shape)
    rv = np.zeros(exact_var.shape)
    nbnorm.batch_norm_forward(x, axis=axis, running_mean=rm, running_var=rv, momentum=1.0)
    unbiased = np.vectorize(lambda v: v * Fraction(n, n - 1), otypes=[object])(exact_var)
    assert relative_error(rv, unbiased) < bound
    assert relative_error(rm, exact_mean) < 2 * np.finfo(stat_dtype(dtype)).eps


def test_reference_is_exact():
    """The reference itself: a case whose moments are known in closed form."""
    x = np.array([1e8 + 1, 1e8 - 1, 1e8 + 2, 1e8 - 2])
    mean, var = exact_moments(x, 0)
    assert mean[()] == Fraction(10**8) and var[()] == Fraction(5, 2)
    assert relative_error(np.array(2.5 * (1 + 2e-16)), var) > 0
