"""``nbnorm.standardize``: the z-score over any axes, on every backend,
against float64 NumPy (``(x − mean)/√(var + eps)``)."""
from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

import nbnorm

from exact import exact_moments
from helpers import (FLOATS, all_axis_subsets, eps, named_layouts, norm_axis, normal, stat_eps,
                     sum_k)


def reference(x, axis, ddof=0, eps=0.0, skipna=False):
    x = np.asarray(x, np.float64)
    ax = norm_axis(axis, x.ndim)
    mean = (np.nanmean if skipna else np.mean)(x, axis=ax, keepdims=True)
    var = (np.nanvar if skipna else np.var)(x, axis=ax, ddof=ddof, keepdims=True)
    with np.errstate(all="ignore"):
        return (x - mean) / np.sqrt(var + eps)


def bound(x, z_ref, dtype, axis):
    """The output's rounding (a few ulp of ``z`` in ``dtype``) plus the
    statistics' accumulation error: blocks summed in the statistics' dtype
    (float32 for float16/float32 data) and merged in float64, relative
    ``stat_eps·sum_k(n)`` (``helpers.sum_k``), which moves ``z`` by that
    times ``|z| + 1``."""
    n = int(np.prod([x.shape[d] for d in norm_axis(axis, x.ndim)]))
    return (4 * eps(dtype) + stat_eps(dtype) * sum_k(n)) * (np.abs(z_ref) + 1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_axis_subset_and_layout(dtype, backend):
    x0 = normal((4, 5, 6), dtype, seed=3, loc=2.0, scale=3.0)
    cases = [(x, ax, ddof) for x in named_layouts(x0).values() for ax in all_axis_subsets(3)
             for ddof in (0, 1)]
    for x, ax, ddof in backend.sample(cases, 6, salt=FLOATS.index(dtype)):
        z = backend.get(nbnorm.standardize(backend.put(x), ax, ddof=ddof))
        ref = reference(x, ax, ddof)
        assert z.dtype == x.dtype and z.shape == x.shape
        np.testing.assert_array_less(np.abs(z - ref), bound(x, ref, dtype, ax))


@pytest.mark.parametrize("dtype,loc", [(np.float32, 288.0), (np.float32, 1e4),
                                       (np.float64, 1e8)])
def test_large_offsets_keep_every_digit_of_the_anomaly(dtype, loc, backend):
    """Kelvin-like float32 data (288 ± 3): the statistics are float64 and
    exact, so z is the float64 z-score of the stored values, rounded once."""
    x = normal(backend.fit((64, 7, 9)), dtype, seed=4, loc=loc, scale=3.0)
    mean, var = exact_moments(x, (0, 2))
    n = x.shape[0] * x.shape[2]
    centred = np.vectorize(lambda v, m: float(Fraction(float(v)) - m), otypes=[float])(
        x, mean[None, :, None])
    for ddof in (0, 1):
        z = backend.get(nbnorm.standardize(backend.put(x), (0, 2), ddof=ddof))
        std = np.array([np.sqrt(float(v * n / (n - ddof))) for v in var])[None, :, None]
        ref = centred / std          # x − exact mean rounded once, over a correctly rounded std
        np.testing.assert_array_less(np.abs(z - ref), bound(x, ref, dtype, (0, 2)))


def test_skipna_leaves_nans_out_and_keeps_them(backend):
    x = normal((20, 3, 5), np.float64, seed=5, loc=10.0)
    x[0, 0, 0] = x[3, 1, 2] = np.nan
    x[:, 2, 1] = np.nan                     # a whole statistic of NaN (axis (0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        z = backend.get(nbnorm.standardize(backend.put(x), 0, ddof=1, skipna=True))
        ref = reference(x, 0, ddof=1, skipna=True)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(z[ok], ref[ok], rtol=1e-13, atol=1e-13)
    without = backend.get(nbnorm.standardize(backend.put(x), 0))
    assert np.isnan(without[:, 0, 0]).all() and not np.isnan(without[:, 0, 1]).any()


def test_eps_constant_statistics_and_too_few_values():
    x = np.ones((4, 3))
    x[:, 1] = np.arange(4)
    z = nbnorm.standardize(x, 0, eps=1e-3)
    assert (z[:, 0] == 0).all()             # a constant statistic: exactly 0 with eps > 0
    with np.errstate(all="ignore"):
        assert np.isnan(nbnorm.standardize(x, 0)[:, 0]).all()   # 0/0, as NumPy
    with pytest.warns(RuntimeWarning):
        z = nbnorm.standardize(x[:1], 0, ddof=1)
    assert np.isnan(z).all()


def test_out_in_place_and_integer_input():
    x = normal((6, 4), np.float32, seed=6, loc=5.0)
    want = nbnorm.standardize(x, 1)
    out = np.full_like(x, np.nan)
    assert nbnorm.standardize(x, 1, out=out) is out
    np.testing.assert_array_equal(out, want)
    xi = x.copy()
    assert nbnorm.standardize(xi, 1, out=xi) is xi
    np.testing.assert_array_equal(xi, want)
    zi = nbnorm.standardize(np.arange(12).reshape(3, 4), 1)
    assert zi.dtype == np.float64
    np.testing.assert_allclose(zi, reference(np.arange(12).reshape(3, 4), 1), rtol=1e-15)


def test_bad_arguments_name_what_to_fix():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="x is required"):
        nbnorm.standardize(None)
    with pytest.raises(TypeError, match="x: "):
        nbnorm.standardize(x.astype(np.complex64))
    with pytest.raises(ValueError, match="eps"):
        nbnorm.standardize(x, 0, eps=-1.0)
    with pytest.raises(TypeError, match="ddof"):
        nbnorm.standardize(x, 0, ddof="1")
    with pytest.raises(np.exceptions.AxisError):
        nbnorm.standardize(x, 2)
    out = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="out"):
        nbnorm.standardize(x, 0, out=out[:, :3])
    np.testing.assert_array_equal(out, 0)


def test_dask_is_lazy_and_matches_numpy():
    da = pytest.importorskip("dask.array")
    import dask
    x = normal((12, 5, 8), np.float32, seed=7, loc=288.0, scale=3.0)
    xd = da.from_array(x, chunks=(5, 5, 3))
    calls = []
    with dask.config.set(scheduler=lambda dsk, keys, **kw: calls.append(1)):
        zs = [nbnorm.standardize(xd, (0, 2)), nbnorm.standardize(xd, (0, 2), ddof=1,
                                                                   skipna=True)]
    assert not calls and all(isinstance(z, da.Array) for z in zs)
    for z, ddof in zip(zs, (0, 1)):
        got = z.compute(scheduler="sync")
        ref = reference(x, (0, 2), ddof)
        np.testing.assert_array_less(np.abs(got - ref), bound(x, ref, np.float32, (0, 2)))
