"""Standardized anomalies by month of a daily field — nbnorm beside xarray.

The field: daily float32 "2 m temperature" at 288 K ± 3 with a seasonal
cycle, NaN over a land mask (a fifth of the grid), ``(days, 90, 180)``;
``anomaly = (x − clim[month])/std[month]`` with the monthly climatology of
the whole record.  ``impl``: ``nbnorm`` (``nbnorm.standardize(x, 0,
by=month, skipna=True)`` on the NumPy array), ``nbnorm-xarray``
(``da.nbnorm.standardize("time", by="time.month")``) and ``xarray``
(``groupby("time.month")``: the anomaly, then divided by the monthly std;
flox is used when installed).  ``years`` 1 (small) and 10 (237 MB).
Skipped without xarray/pandas.

Run as a script for the documentation's table (``python -m
benchmarks.bench_anomalies [--runs 3] [--years 10] [--doc
docs/guide/anomalies.md]``): each run times every implementation (median
of ``--repeat`` calls, alternating), prints the speed-up over xarray and
the fraction of the memory roofline (the statistics read ``x`` once, ``z``
reads it again and writes it: ``3·x.nbytes`` at this machine's copy
bandwidth, :mod:`nbnorm._bandwidth`); ``--doc`` writes the table between
the file's ``anomalies-table`` markers.
"""
from __future__ import annotations

import argparse
import warnings
import platform
import time

import numpy as np


from .skips import have, skip

IMPLS = ("nbnorm", "nbnorm-xarray", "xarray")


def field(years, seed=0):
    """``(x, DataArray)`` of ``years`` of daily data (see the module docstring)."""
    import pandas as pd
    import xarray as xr
    days = 365 * years
    t = pd.date_range("2001-01-01", periods=days, freq="D")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((days, 90, 180), dtype=np.float32) * 3
    x += (288 + 8 * np.sin(2 * np.pi * np.arange(days) / 365)).astype(np.float32)[:, None, None]
    land = np.zeros((90, 180), bool)
    land[20:50, 30:90] = land[55:80, 120:150] = True
    x[:, land] = np.nan
    return x, xr.DataArray(x, dims=("time", "lat", "lon"), coords={"time": t}, name="t2m")


def calls(x, da):
    """``{impl: zero-argument call}``."""
    import nbnorm.xarray  # noqa: F401  (the accessor)
    month = da.time.dt.month.values

    def with_xarray():
        g = da.groupby("time.month")
        anomaly = g - g.mean("time")
        return (anomaly.groupby("time.month") / g.std("time")).values

    return {"nbnorm": lambda: nbnorm.standardize(x, 0, by=month, skipna=True),
            "nbnorm-xarray": lambda: da.nbnorm.standardize("time", by="time.month").values,
            "xarray": with_xarray}


class Anomalies:
    params = [[1, 10], list(IMPLS)]
    param_names = ["years", "impl"]
    timeout = 300

    def setup(self, years, impl):
        if not (have("xarray") and have("pandas")):
            skip("xarray and pandas are needed (pip install xarray)")
        self.x, self.da = field(years)
        self.call = calls(self.x, self.da)[impl]

    def time_anomalies(self, years, impl):
        """Monthly standardized anomalies of the whole field."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.call()


def measure(years, runs, repeat):
    """Per run: ``{impl: median seconds}`` (implementations alternating)."""
    x, da = field(years)
    fns = calls(x, da)
    for fn in fns.values():
        fn()
    results = []
    for _ in range(runs):
        times = {k: [] for k in fns}
        for _ in range(repeat):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        results.append({k: float(np.median(v)) for k, v in times.items()})
    return x, results


def table(x, results, copy_bps, years):
    flox = "with flox" if have("flox") else "without flox"
    import xarray
    lines = [f"Monthly standardized anomalies of a daily float32 field, {years} years × 90 × 180 "
             f"({x.nbytes / 1e6:.0f} MB, NaN over land), per run the median of the calls; "
             f"xarray {xarray.__version__} {flox}; {platform.machine()}, "
             f"`python -m benchmarks.bench_anomalies`.", "",
             "| run | nbnorm | nbnorm.xarray | xarray groupby | speed-up over xarray | "
             "of the memory roofline |", "|---|---|---|---|---|---|"]
    roof = 3 * x.nbytes / copy_bps
    for i, r in enumerate(results, 1):
        lines.append(f"| {i} | {r['nbnorm'] * 1e3:.0f} ms | {r['nbnorm-xarray'] * 1e3:.0f} ms | "
                     f"{r['xarray'] * 1e3:.0f} ms | {r['xarray'] / r['nbnorm']:.1f}× | "
                     f"{roof / r['nbnorm']:.0%} |")
    lines.append("")
    lines.append(f"Roofline: `3·x.nbytes` (statistics read `x`, `z` reads it and writes) at "
                 f"this machine's copy bandwidth, {copy_bps / 1e9:.1f} GB/s (`nbnorm._bandwidth`).")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--years", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--doc", help="write the table between this file's anomalies-table markers")
    a = p.parse_args(argv)
    from nbnorm._bandwidth import copy_bandwidth
    from nbnorm._bench import write_between
    with warnings.catch_warnings():     # the land's statistics have no values: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        x, results = measure(a.years, a.runs, a.repeat)
    text = table(x, results, copy_bandwidth(x.nbytes), a.years)
    print(text)
    if a.doc:
        write_between(a.doc, "anomalies-table", text)


if __name__ == "__main__":
    main()
