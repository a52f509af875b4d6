"""Statistics per group of a labelled axis (``by=``) in ``moments``,
``Moments.of`` and ``standardize``: against float64 NumPy per group, with
negative labels left out, interleaved and many short runs, NaNs; on every
backend (``backend`` fixture: CPU, CUDA) and on Dask."""
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


def sized(backend, **kwargs):
    """``daily(**kwargs)``, one year of a 2 × 3 grid on the CUDA simulator."""
    if backend.small:
        kwargs.update(years=1, shape=(2, 3))
    return daily(**kwargs)


def per_group(x, labels, axis, fn):
    """``fn`` (a NumPy reduction over ``axis``) of each group, stacked."""
    a = axis[0] if isinstance(axis, tuple) else axis
    groups = np.unique(labels[labels >= 0])
    return np.stack([fn(np.compress(labels == g, x, axis=a), axis) for g in groups])


@pytest.mark.parametrize("axis", [0, (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_by_month(backend, axis, ddof):
    x, month = sized(backend)
    mean, var = backend.back(nbnorm.moments(backend.put(x), axis, ddof=ddof, by=month))
    x64 = x.astype(np.float64)
    want_m = per_group(x64, month, axis, lambda v, ax: v.mean(ax))
    want_v = per_group(x64, month, axis, lambda v, ax: v.var(ax, ddof=ddof))
    assert mean.dtype == np.float32 and mean.shape == want_m.shape
    np.testing.assert_allclose(mean, want_m, rtol=1e-7)
    np.testing.assert_allclose(var, want_v, rtol=2e-6)


def test_float32_kelvin_variance_is_within_1e6_of_the_exact_one(backend):
    """288 K ± 3 in float32: E[x²] − E[x]² would lose every digit; the
    grouped one-pass variance is within 1e-6 of the exact value."""
    x, month = sized(backend, years=4, shape=(3, 3))
    _, var = backend.back(nbnorm.moments(backend.put(x), 0, by=month))
    for g in range(12):
        _, exact = exact_moments(x[month == g], 0)
        rel = np.abs(var[g].astype(np.float64) - exact.astype(np.float64)) / exact.astype(
            np.float64)
        assert rel.max() < 1e-6, (g, rel.max())


def test_negative_labels_interleaved_and_many_short_runs(backend):
    rng = np.random.default_rng(1)
    n = 60 if backend.small else 500
    x = rng.standard_normal((n, 6))
    for labels in (rng.integers(-1, 4, n),    # ~0.8 n runs: gathered per group (not on CUDA)
                   np.repeat([3, 0, -5, 3, 1, 0], [90, 80, 70, 100, 60, 100])[:: 500 // n][:n]):
        mean, var = backend.back(nbnorm.moments(backend.put(x), 0, ddof=1, by=labels))
        np.testing.assert_allclose(mean, per_group(x, labels, 0, lambda v, a: v.mean(a)),
                                   rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(var, per_group(x, labels, 0, lambda v, a: v.var(a, ddof=1)),
                                   rtol=1e-13)
        assert mean.shape[0] == np.unique(labels[labels >= 0]).size


def test_skipna_counts_each_group_and_statistic(backend):
    x, month = sized(backend, shape=(3, 4), dtype=np.float64)
    x[::7, 0, 0] = np.nan
    x[:, 1, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = backend.back(nbnorm.moments(backend.put(x), 0, by=month, skipna=True))
        want = per_group(x, month, 0, lambda v, a: np.nanmean(v, a))
    np.testing.assert_allclose(mean, want, rtol=1e-13)
    assert np.isnan(mean[:, 1, 1]).all()
    state = nbnorm.Moments.of(backend.put(x), 0, by=month, skipna=True)
    assert state.shape == (12,) + x.shape[1:]
    np.testing.assert_array_equal(backend.get(state.count)[:, 0, 1], np.bincount(month))


def test_grouped_states_merge_year_by_year(backend):
    years = 2 if backend.small else 3
    x, month = daily(years=years, dtype=np.float64, shape=(2, 3) if backend.small else (4, 5))
    acc = None
    for y in range(years):
        s = nbnorm.Moments.of(backend.put(x[365 * y:365 * (y + 1)]), 0, by=month[:365])
        acc = s if acc is None else acc + s
    whole = nbnorm.Moments.of(backend.put(x), 0, by=month)
    acc_count, acc_mean, acc_var, count, mean, var = backend.back(
        (acc.count, acc.mean, acc.var(), whole.count, whole.mean, whole.var()))
    np.testing.assert_array_equal(acc_count, count)
    np.testing.assert_allclose(acc_mean, mean, rtol=1e-14)
    np.testing.assert_allclose(acc_var, var, rtol=1e-12)


@pytest.mark.parametrize("ddof,skipna", [(0, False), (1, True)])
def test_standardize_by_group(backend, ddof, skipna):
    x, month = sized(backend, shape=(3, 4))
    labels = month.copy()
    labels[40:50] = -1
    z = backend.get(nbnorm.standardize(backend.put(x), 0, ddof=ddof, skipna=skipna, by=labels))
    x64 = x.astype(np.float64)
    want = np.full_like(x64, np.nan)
    for g in np.unique(labels[labels >= 0]):
        s = labels == g
        want[s] = (x64[s] - x64[s].mean(0)) / x64[s].std(0, ddof=ddof)
    assert z.dtype == x.dtype
    np.testing.assert_array_equal(np.isnan(z), np.isnan(want))
    ok = ~np.isnan(want)
    assert (np.abs(z[ok] - want[ok]) <= 4e-7 * (np.abs(want[ok]) + 1)).all()
    out = backend.put(np.zeros_like(x))
    assert nbnorm.standardize(backend.put(x), 0, ddof=ddof, skipna=skipna, by=labels,
                              out=out) is out
    np.testing.assert_array_equal(backend.get(out), z)
    xi = backend.put(x.copy())
    assert nbnorm.standardize(xi, 0, ddof=ddof, skipna=skipna, by=labels, out=xi) is xi
    np.testing.assert_array_equal(backend.get(xi), z)


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
    x = np.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match=r"out: shares memory with x"):
        nbnorm.standardize(x, 0, by=np.zeros(6, int), out=x[::-1])
    np.testing.assert_array_equal(x, np.arange(12.0).reshape(6, 2))
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match=r"out: not supported with Dask input"):
        nbnorm.standardize(da.from_array(x), 0, by=np.zeros(6, int), out=np.empty_like(x))
