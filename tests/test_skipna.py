"""NaN-aware statistics (``skipna=True``) against ``np.nanmean``/``np.nanvar``,
on every backend (the ``backend`` fixture: CPU, CUDA).

NaNs are left out and counted per statistic; infinities are not skipped
(NumPy's nan-functions give ±inf / NaN for them, and so do these); a
statistic with no value left has mean and variance NaN with a warning.  The
Hypothesis sweep over random NaN masks and layouts (``check`` below) is in
``test_sweep.py``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbnorm
from nbnorm import Moments

from exact import exact_moments, relative_error
from helpers import FLOATS, channels_last, relayout

CASES = [((6, 5, 7, 9), (0, 2, 3)), ((4, 3, 64, 64), (0, 2, 3)),   # NCHW, fused-size
         ((3000, 8), 0), ((20001, 8), 0),                          # narrow channels-last rows
         ((3, 70001), 1), ((300, 500), None)]                      # chunked, axis=None


def with_nans(shape, dtype, fraction, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    x[rng.random(shape) < fraction] = np.nan
    return x


def views(x):
    if x.ndim == 4:
        return [x, channels_last(x)]
    return [x, relayout(x, perm=tuple(reversed(range(x.ndim)))), np.flip(x, 0)]


def check(x, axis, ddof=0, keepdims=False, backend=None):
    xf = np.asarray(x, np.float64)
    put = backend.put if backend else (lambda a: a)
    get = backend.get if backend else (lambda a: a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = map(get, nbnorm.moments(put(x), axis, ddof=ddof, keepdims=keepdims,
                                            skipna=True))
        want_mean = np.nanmean(xf, axis=axis, keepdims=keepdims)
        want_var = np.nanvar(xf, axis=axis, ddof=ddof, keepdims=keepdims)
    tol = 1e-13 if np.dtype(x.dtype) == np.float64 else 2e-6
    np.testing.assert_allclose(mean, want_mean, rtol=tol, atol=tol)
    np.testing.assert_allclose(var, want_var, rtol=10 * tol, atol=tol)
    state = Moments.of(put(x), axis, skipna=True)
    np.testing.assert_array_equal(get(state.count), (~np.isnan(xf)).sum(axis=axis))


# every case × dtype × NaN fraction on the CPU; on CUDA (the simulator runs
# each GPU thread in Python) every case × dtype at one fraction, two layouts
MATRIX = [pytest.param(b, shape, axis, dtype, fraction,
                       marks=[pytest.mark.cuda] if b == "cuda" else [])
          for b in ("cpu", "cuda") for shape, axis in CASES for dtype in FLOATS
          for fraction in (0.0, 0.3, 0.97) if b == "cpu" or fraction == 0.3]


@pytest.mark.parametrize("backend,shape,axis,dtype,fraction", MATRIX, indirect=["backend"])
def test_matches_numpy_nan_functions(backend, shape, axis, dtype, fraction):
    for v in views(with_nans(backend.fit(shape), dtype, fraction, seed=1))[:2 if backend.small
                                                                           else None]:
        if not backend.small:
            check(v, axis, backend=backend)
        check(v, axis, ddof=1, keepdims=True, backend=backend)


def test_without_nans_equals_the_plain_statistics(backend):
    x = np.random.default_rng(2).standard_normal(backend.fit((8, 16, 32, 32)))
    x = x.astype(np.float32) + 5
    for v in views(x):
        d = backend.put(v)
        for a, b in zip(nbnorm.moments(d, (0, 2, 3)), nbnorm.moments(d, (0, 2, 3), skipna=True)):
            np.testing.assert_array_equal(backend.get(a), backend.get(b))


def test_all_nan_statistics_and_infinities(backend):
    y = np.ones((5, 4))
    y[:, 1] = np.nan
    y[0, 2] = np.inf
    y[0, 3], y[1, 3] = np.inf, -np.inf
    with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        mean, var = map(backend.get, nbnorm.moments(backend.put(y), 0, skipna=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(mean, np.nanmean(y, 0))
        np.testing.assert_array_equal(var, np.nanvar(y, 0))
    s = Moments.of(backend.put(y), 0, skipna=True)
    count, smean, m2 = map(backend.get, (s.count, s.mean, s.m2))
    assert count.tolist() == [5, 0, 5, 5] and np.isnan(smean[1]) and m2[1] == 0


@pytest.mark.parametrize("dtype,loc,bound", [(np.float64, 1e8, 1e-14), (np.float32, 1e4, 1e-6)])
@pytest.mark.parametrize("lead", [False, True])
def test_exact_at_large_offset_with_nans(backend, dtype, loc, bound, lead):
    """Exact to the bound with 20 % NaNs, also when each row starts with NaNs
    (``lead``: the pivot must come from a later, finite element)."""
    rng = np.random.default_rng(3)
    x = (loc + rng.standard_normal(backend.fit((3, 40000)))).astype(dtype)
    x[rng.random(x.shape) < 0.2] = np.nan
    if lead:
        x[:, :5] = np.nan
    _, var = map(backend.get, nbnorm.moments(backend.put(x), 1, skipna=True))
    for k in range(3):
        row = x[k][~np.isnan(x[k])]
        _, exact = exact_moments(row, 0)
        assert relative_error(var[k:k + 1], exact.reshape(1)) < bound
