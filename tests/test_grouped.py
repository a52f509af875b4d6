"""Statistics per group of a labelled axis (``by=``) in ``moments``,
``Moments.of`` and ``standardize``: against float64 NumPy per group, with
negative labels left out, interleaved and many short runs, NaNs, Dask."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbnorm

from exact import exact_moments


def daily(years=3, shape=(4, 5), dtype=np.float32, seed=0, loc=288.0):
    rng = np.random.default_rng(seed)
    t = np.arange(365 * years)
    month = (t % 365) // 31                  # 12 labels, 36 runs
    x = (loc + 6 * np.sin(2 * np.pi * t / 365)[:, None, None]
         + rng.standard_normal((t.size,) + shape) * 3).astype(dtype)
    return x, month


def per_group(x, labels, axis, fn):
    """``fn`` (a NumPy reduction over ``axis``) of each group, stacked."""
    a = axis[0] if isinstance(axis, tuple) else axis
    groups = np.unique(labels[labels >= 0])
    return np.stack([fn(np.compress(labels == g, x, axis=a), axis) for g in groups])


@pytest.mark.parametrize("axis", [0, (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_by_month(axis, ddof):
    x, month = daily()
    mean, var = nbnorm.moments(x, axis, ddof=ddof, by=month)
    x64 = x.astype(np.float64)
    want_m = per_group(x64, month, axis, lambda v, ax: v.mean(ax))
    want_v = per_group(x64, month, axis, lambda v, ax: v.var(ax, ddof=ddof))
    assert mean.dtype == np.float32 and mean.shape == want_m.shape
    np.testing.assert_allclose(mean, want_m, rtol=1e-7)
    np.testing.assert_allclose(var, want_v, rtol=2e-6)


def test_float32_kelvin_variance_is_within_1e6_of_the_exact_one():
    """288 K ± 3 in float32: E[x²] − E[x]² would lose every digit; the
    grouped one-pass variance is within 1e-6 of the exact value."""
    x, month = daily(years=4, shape=(3, 3))
    _, var = nbnorm.moments(x, 0, by=month)
    for g in range(12):
        _, exact = exact_moments(x[month == g], 0)
        rel = np.abs(var[g].astype(np.float64) - exact.astype(np.float64)) / exact.astype(
            np.float64)
        assert rel.max() < 1e-6, (g, rel.max())


def test_negative_labels_interleaved_and_many_short_runs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 6))
    for labels in (rng.integers(-1, 4, 500),                 # ~400 runs: gathered per group
                   np.repeat([3, 0, -5, 3, 1, 0], [90, 80, 70, 100, 60, 100])):
        mean, var = nbnorm.moments(x, 0, ddof=1, by=labels)
        np.testing.assert_allclose(mean, per_group(x, labels, 0, lambda v, a: v.mean(a)),
                                   rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(var, per_group(x, labels, 0, lambda v, a: v.var(a, ddof=1)),
                                   rtol=1e-13)
        assert mean.shape[0] == np.unique(labels[labels >= 0]).size


def test_skipna_counts_each_group_and_statistic():
    x, month = daily(shape=(3, 4), dtype=np.float64)
    x[::7, 0, 0] = np.nan
    x[:, 1, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = nbnorm.moments(x, 0, by=month, skipna=True)
        want = per_group(x, month, 0, lambda v, a: np.nanmean(v, a))
    np.testing.assert_allclose(mean, want, rtol=1e-13)
    assert np.isnan(mean[:, 1, 1]).all()
    state = nbnorm.Moments.of(x, 0, by=month, skipna=True)
    assert state.shape == (12, 3, 4)
    np.testing.assert_array_equal(state.count[:, 0, 1], np.bincount(month))


def test_grouped_states_merge_year_by_year():
    x, month = daily(years=3, dtype=np.float64)
    acc = None
    for y in range(3):
        s = nbnorm.Moments.of(x[365 * y:365 * (y + 1)], 0, by=month[:365])
        acc = s if acc is None else acc + s
    whole = nbnorm.Moments.of(x, 0, by=month)
    np.testing.assert_array_equal(acc.count, whole.count)
    np.testing.assert_allclose(acc.mean, whole.mean, rtol=1e-14)
    np.testing.assert_allclose(acc.var(), whole.var(), rtol=1e-12)


@pytest.mark.parametrize("ddof,skipna", [(0, False), (1, True)])
def test_standardize_by_group(ddof, skipna):
    x, month = daily(shape=(3, 4))
    labels = month.copy()
    labels[40:50] = -1
    z = nbnorm.standardize(x, 0, ddof=ddof, skipna=skipna, by=labels)
    x64 = x.astype(np.float64)
    want = np.full_like(x64, np.nan)
    for g in np.unique(labels[labels >= 0]):
        s = labels == g
        want[s] = (x64[s] - x64[s].mean(0)) / x64[s].std(0, ddof=ddof)
    assert z.dtype == x.dtype
    np.testing.assert_array_equal(np.isnan(z), np.isnan(want))
    ok = ~np.isnan(want)
    assert (np.abs(z[ok] - want[ok]) <= 4e-7 * (np.abs(want[ok]) + 1)).all()
    out = np.zeros_like(x)
    assert nbnorm.standardize(x, 0, ddof=ddof, skipna=skipna, by=labels, out=out) is out
    np.testing.assert_array_equal(out, z)
    xi = x.copy()
    assert nbnorm.standardize(xi, 0, ddof=ddof, skipna=skipna, by=labels, out=xi) is xi
    np.testing.assert_array_equal(xi, z)


def test_dask_grouped_is_lazy_and_matches():
    da = pytest.importorskip("dask.array")
    import dask
    x, month = daily(shape=(3, 4))
    xd = da.from_array(x, chunks=(100, 3, 2))          # chunks cut through the months
    calls = []
    with dask.config.set(scheduler=lambda dsk, keys, **kw: calls.append(1)):
        mean, var = nbnorm.moments(xd, 0, by=month)
        z = nbnorm.standardize(xd, 0, by=month)
        state = nbnorm.Moments.of(xd, 0, by=month)
    assert not calls
    with dask.config.set(scheduler="sync"):
        want_m, want_v = nbnorm.moments(x, 0, by=month)
        np.testing.assert_allclose(mean.compute(), want_m, rtol=1e-7)
        np.testing.assert_allclose(var.compute(), want_v, rtol=1e-6)
        np.testing.assert_allclose(z.compute(), nbnorm.standardize(x, 0, by=month),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(state.var().compute(), want_v, rtol=1e-6)


def test_bad_labels_name_what_to_fix():
    x = np.zeros((6, 2))
    with pytest.raises(ValueError, match=r"by: expected 6 labels"):
        nbnorm.moments(x, 0, by=[0, 1])
    with pytest.raises(TypeError, match=r"by: expected integer labels"):
        nbnorm.standardize(x, 0, by=np.linspace(0, 1, 6))
    with pytest.raises(ValueError, match=r"axis: with by"):
        nbnorm.moments(x, None, by=np.zeros(6, int))
    with pytest.raises(ValueError, match=r"keepdims"):
        nbnorm.moments(x, 0, keepdims=True, by=np.zeros(6, int))
    out = np.ones((6, 3))
    with pytest.raises(ValueError, match=r"out: expected shape"):
        nbnorm.standardize(x, 0, by=np.zeros(6, int), out=out)
    assert (out == 1).all()


@pytest.mark.cuda
def test_cuda_arrays_say_by_is_not_there_yet():
    pytest.importorskip("numba.cuda")
    from nbnorm._cuda.backend import to_device_like
    xd = to_device_like(np.zeros((6, 2)))
    with pytest.raises(NotImplementedError, match="by: grouped statistics are not implemented "
                                                  "for cuda arrays"):
        nbnorm.moments(xd, 0, by=np.zeros(6, int))
