"""Climatology and standardized anomalies of a daily field with nbnorm.xarray.

A synthetic daily 2 m temperature field (10 years × 45 × 90, float32 kelvin,
NaN over land) with a seasonal cycle and a warm spell injected in one
summer; the monthly climatology (mean and standard deviation per calendar
month and pixel) and every day's standardized anomaly against it, checked
against xarray's ``groupby``; the anomalies of one pixel plotted::

    python examples/anomalies.py [--plot anomalies.png]

(``pip install ".[xarray]"``; the plot needs matplotlib.)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import xarray as xr

import nbnorm.xarray as nbx


def field(years=10, seed=0):
    rng = np.random.default_rng(seed)
    time_ = pd.date_range("2011-01-01", periods=365 * years, freq="D")
    lat, lon = np.linspace(-66, 66, 45), np.linspace(0, 356, 90)
    doy = time_.day_of_year.values
    season = 10 * np.cos(2 * np.pi * (doy - 200) / 365)[:, None, None] * np.sin(
        np.radians(lat))[:, None]
    x = (288 + season + rng.standard_normal((time_.size, lat.size, lon.size)) * 2.5)
    spell = (time_.year == 2018) & (time_.month == 7) & (time_.day >= 10) & (time_.day < 20)
    x[spell, 30:34, 40:44] += 9.0                      # a ten-day warm spell
    x = x.astype(np.float32)
    land = np.zeros((lat.size, lon.size), bool)
    land[10:20, 20:35] = land[25:40, 60:75] = True
    x[:, land] = np.nan
    return xr.DataArray(x, dims=("time", "lat", "lon"), name="t2m",
                        coords={"time": time_, "lat": lat, "lon": lon},
                        attrs={"units": "K", "long_name": "2 m temperature"})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plot", help="write the anomalies of one pixel to this PNG")
    a = p.parse_args(argv)
    da = field()
    t0 = time.perf_counter()
    clim, var = nbx.moments(da, "time", by="time.month")
    z = da.nbnorm.standardize("time", by="time.month")
    took = time.perf_counter() - t0
    g = da.astype(np.float64).groupby("time.month")
    anomaly = g - g.mean("time")
    want = (anomaly.groupby("time.month") / g.std("time")).drop_vars("month")
    err = float(np.nanmax(np.abs(z - want)))
    pixel = z.sel(lat=slice(26, 34), lon=slice(160, 172)).isel(lat=0, lon=0)
    peak = pixel.sel(time=slice("2018-07-01", "2018-07-31")).max().item()
    print(f"anomalies: {da.shape} {da.dtype}, climatology {dict(clim.sizes)}; "
          f"max |z − xarray's| = {err:.1e}; warm spell peak z = {peak:.1f}; {took:.2f} s")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 3), dpi=110)
        pixel.sel(time=slice("2017-01-01", "2019-12-31")).plot(ax=ax, lw=0.6)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"standardized anomaly of one pixel ({pixel.lat.item():.0f}°, "
                     f"{pixel.lon.item():.0f}°) against its monthly climatology")
        ax.set_ylabel("z")
        fig.tight_layout()
        fig.savefig(a.plot)
    return err


if __name__ == "__main__":
    main()
