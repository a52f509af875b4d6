"""``nbnorm.xarray``: moments and standardized anomalies by dimension name,
against xarray's own reductions in float64 (values, dims, coordinates,
names, attributes, NaN masks), NumPy- and Dask-backed, on a synthetic daily
field in float32 kelvin with a land mask."""
from __future__ import annotations

import numpy as np
import pytest

import nbnorm

xr = pytest.importorskip("xarray")
nbx = pytest.importorskip("nbnorm.xarray")


def field(years=2, nlat=6, nlon=8, seed=0):
    """Daily 2 m temperature: 288 K + a seasonal cycle + noise, NaN over land."""
    rng = np.random.default_rng(seed)
    t = np.arange(365 * years)
    lat, lon = np.linspace(-60, 60, nlat), np.linspace(0, 315, nlon)
    season = 8 * np.sin(2 * np.pi * t / 365)[:, None, None] * np.cos(np.radians(lat))[:, None]
    x = (288 + season + rng.standard_normal((t.size, nlat, nlon)) * 3).astype(np.float32)
    land = np.zeros((nlat, nlon), bool)
    land[1:3, 2:5] = True
    x[:, land] = np.nan
    x[5, 0, 0] = np.nan                       # a missing day over the ocean
    return xr.DataArray(x, dims=("time", "lat", "lon"),
                        coords={"time": t, "lat": lat, "lon": lon,
                                "month": ("time", (t % 365) // 31)},
                        name="t2m", attrs={"units": "K"})


def as64(obj):
    return obj.astype(np.float64)


@pytest.mark.parametrize("dim", ["time", ("lat", "lon"), ["time", "lon"], None])
@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_are_xarrays_mean_and_var(dim, ddof):
    da = field()
    mean, var = nbx.moments(da, dim, ddof=ddof)
    want_m, want_v = as64(da).mean(dim), as64(da).var(dim, ddof=ddof)
    for got, want in ((mean, want_m), (var, want_v)):
        assert got.dtype == np.float32 and got.dims == want.dims and got.name == "t2m"
        assert got.attrs == want.attrs
        xr.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-6)
        assert set(got.coords) == set(want.coords)
        np.testing.assert_array_equal(np.isnan(got.values), np.isnan(want.values))


@pytest.mark.parametrize("dim", ["time", ("time", "lon")])
@pytest.mark.parametrize("ddof", [0, 1])
def test_standardize_is_the_anomaly_over_the_std(dim, ddof):
    da = field()
    z = nbx.standardize(da, dim, ddof=ddof)
    d = as64(da)
    want = (d - d.mean(dim)) / d.std(dim, ddof=ddof)
    assert z.dtype == np.float32 and z.dims == da.dims and z.name == da.name
    assert z.attrs == da.attrs
    xr.testing.assert_identical(z.coords.to_dataset(), da.coords.to_dataset())
    np.testing.assert_array_equal(np.isnan(z.values), np.isnan(want.values))
    ok = ~np.isnan(want.values)
    err = np.abs(z.values[ok] - want.values[ok])
    assert (err <= 4e-7 * (np.abs(want.values[ok]) + 1)).all(), err.max()


@pytest.mark.parametrize("keep", [True, False])
def test_attributes_follow_xarrays_keep_attrs(keep):
    da = field(years=1)
    with xr.set_options(keep_attrs=keep):
        assert nbx.moments(da, "time")[0].attrs == da.mean("time").attrs
        assert bool(da.mean("time").attrs) == keep


def test_skipna_false_makes_a_nan_statistic_nan():
    da = field()
    z = nbx.standardize(da, "time", skipna=False)
    assert np.isnan(z.values[:, 0, 0]).all() and not np.isnan(z.values[:, 0, 1]).any()
    mean, _ = nbx.moments(da, "time", skipna=False)
    assert np.isnan(mean.values[0, 0]) and not np.isnan(mean.values[0, 1])


def test_dataset_every_data_variable():
    da = field()
    ds = xr.Dataset({"t2m": da, "sst": (da - 1).rename("sst")}, attrs={"title": "test"})
    mean, var = nbx.moments(ds, "time")
    assert set(mean.data_vars) == {"t2m", "sst"} and mean.attrs == ds.mean("time").attrs
    xr.testing.assert_allclose(mean.astype(np.float64), as64(ds).mean("time"), rtol=2e-6)
    z = ds.nbnorm.standardize("time")
    assert z.attrs == ds.attrs and set(z.data_vars) == {"t2m", "sst"}
    xr.testing.assert_allclose(z["sst"], nbx.standardize(ds["sst"], "time"))
    with pytest.raises(ValueError, match="'elev' has no dimension 'time'"):
        nbx.moments(ds.assign(elev=(("lat", "lon"), np.zeros((6, 8)))), "time")


def test_dask_backed_stays_lazy_and_matches():
    pytest.importorskip("dask.array")
    import dask
    da = field()
    lazy = da.chunk({"time": 100, "lat": 3})
    calls = []
    with dask.config.set(scheduler=lambda dsk, keys, **kw: calls.append(1)):
        mean, var = nbx.moments(lazy, "time", ddof=1)
        z = lazy.nbnorm.standardize("time")
    assert not calls
    assert all(isinstance(a.data, dask.array.Array) for a in (mean, var, z))
    with dask.config.set(scheduler="sync"):
        xr.testing.assert_allclose(mean.compute(), nbx.moments(da, "time", ddof=1)[0])
        xr.testing.assert_allclose(var.compute(), nbx.moments(da, "time", ddof=1)[1],
                                   rtol=1e-6)
        xr.testing.assert_allclose(z.compute(), nbx.standardize(da, "time"), rtol=1e-6,
                                   atol=1e-6)


def test_dask_backed_land_pixels_compute_without_warnings():
    """A statistic without values (land) is NaN without a warning, as in
    xarray's own reductions and the NumPy-backed call, also when a Dask-backed
    result is computed after the call has returned (the graph carries the
    decision the call's warning filters made)."""
    pytest.importorskip("dask.array")
    import warnings

    import dask
    da = field()
    lazy = da.chunk({"time": 100})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = (*nbx.moments(lazy, "time", ddof=1), nbx.standardize(lazy, "time"),
                   *nbx.moments(lazy, "time", by="month"),
                   nbx.standardize(lazy, "time", by="month"))
        with dask.config.set(scheduler="sync"):
            got = [r.compute() for r in results]
    var, z, grouped_var, grouped_z = got[1], got[2], got[4], got[5]
    assert np.isnan(var.values[1, 2]) and not np.isnan(var.values[0, 1])
    for a in (z, grouped_var, grouped_z):
        assert np.isnan(a.values[:, 1, 2]).all() and not np.isnan(a.values[:, 0, 1]).all()
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):     # nbnorm's own call warns
        nbnorm.moments(lazy.data, 0, skipna=True)[1].compute(scheduler="sync")


def test_accessor_and_errors():
    da = field(years=1)
    xr.testing.assert_identical(da.nbnorm.moments("time")[0], nbx.moments(da, "time")[0])
    with pytest.raises(ValueError, match="'depth' is not a dimension"):
        nbx.standardize(da, "depth")
    with pytest.raises(ValueError, match="twice"):
        nbx.moments(da, ("time", "time"))
    with pytest.raises(TypeError, match="DataArray or Dataset"):
        nbx.moments(da.values, "time")


def monthly_field():
    pd = pytest.importorskip("pandas")
    da = field(years=3)
    return da.assign_coords(time=pd.date_range("2001-01-01", periods=da.sizes["time"],
                                               freq="D")).drop_vars("month")


@pytest.mark.parametrize("by", ["time.month", "da.time.dt.month"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_climatology_by_month_is_xarrays_groupby(by, ddof):
    da = monthly_field()
    by = da.time.dt.month if by.startswith("da.") else by
    mean, var = nbx.moments(da, "time", by=by, ddof=ddof)
    g = as64(da).groupby("time.month")
    want_m, want_v = g.mean("time"), g.var("time", ddof=ddof)
    for got, want in ((mean, want_m), (var, want_v)):
        assert got.dims == want.dims == ("month", "lat", "lon") and got.name == "t2m"
        np.testing.assert_array_equal(got.month.values, np.arange(1, 13))
        xr.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-6)
        assert got.attrs == want.attrs


def test_anomalies_against_the_monthly_climatology():
    da = monthly_field()
    z = da.nbnorm.standardize("time", by="time.month", ddof=1)
    g = as64(da).groupby("time.month")
    anomaly = g - g.mean("time")
    want = (anomaly.groupby("time.month") / g.std("time", ddof=1)).drop_vars("month")
    want = want.transpose(*da.dims)
    assert z.dims == da.dims and z.attrs == da.attrs and z.name == da.name
    np.testing.assert_array_equal(np.isnan(z.values), np.isnan(want.values))
    ok = ~np.isnan(want.values)
    assert (np.abs(z.values[ok] - want.values[ok]) <= 4e-7 * (np.abs(want.values[ok]) + 1)).all()


def test_grouped_dask_and_dataset():
    pytest.importorskip("dask.array")
    import dask
    da = monthly_field()
    ds = xr.Dataset({"t2m": da, "sst": da - 1})
    lazy = ds.chunk({"time": 200})
    calls = []
    with dask.config.set(scheduler=lambda dsk, keys, **kw: calls.append(1)):
        mean, _ = nbx.moments(lazy, "time", by="time.month")
    assert not calls
    with dask.config.set(scheduler="sync"):
        xr.testing.assert_allclose(mean.compute(), nbx.moments(ds, "time", by="time.month")[0])
    with pytest.raises(ValueError, match="by: expected labels along 'time'"):
        nbx.moments(da, "time", by=da.lat)
