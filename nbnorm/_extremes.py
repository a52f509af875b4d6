"""Statistics of values near the top of the floating-point range.

The kernels sum ``x − pivot`` and its square in the accumulator type
(float32 for float16/float32 data, float64 for float64).  Near the top of
the range those sums overflow although the mean, and often the variance,
fit: ``[1e308, 0, 0]`` sums to inf about the pivot 1e308, and ``(x − c)²``
of float32 data overflows from ``|x − c| ≈ 1.8e19`` on.  An overflow always
leaves an inf or NaN in the statistic's ``(mean, M2)``, so a backend checks
those (a few operations per statistic) and recomputes only the statistics
that are not finite although all their values are: :func:`scaled_moments`,
two passes in float64 over the values scaled by powers of two (exact), so
that no sum can overflow.  A mean of finite values always fits; ``M2`` is
inf only where the true ``Σ(x − mean)²`` exceeds float64's range, and the
variance is then inf, as NumPy's.  The scaling rules are
:mod:`nbnorm._welford`'s; the CUDA backend applies them in its finalizing
kernel (``_cuda.per_stat.rescaled_moments``).
"""
from __future__ import annotations

import math

import numpy as np

from ._welford import ldexp_saturating, mean_shift, spread_shift


def scaled_moments(values, skipna=False):
    """``(count, mean, M2)`` in float64 of the float values ``values`` (any
    shape; NaNs left out with ``skipna``), without intermediate overflow.

    ``mean = Σ(x·s)/n / s`` with ``s = 2^-k`` the smallest scale for which
    ``n·max|x|·s`` fits (NumPy's pairwise sum);
    ``M2 = Σ(d·t)² / t²`` with ``d = x·s − mean·s`` and ``t`` a power of two
    that keeps ``n·max|d·t|²`` in range, then ``M2/s²`` (inf only if it does
    not fit).  Values that are not finite give the mean NumPy gives and a NaN
    ``M2``."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if skipna:
        v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return 0, math.nan, math.nan
    if not np.isfinite(v).all():
        with np.errstate(invalid="ignore", over="ignore"):
            return n, float(np.mean(v)), math.nan
    top = float(np.max(np.abs(v)))
    if top == 0.0:
        return n, 0.0, 0.0
    k = mean_shift(top, n)
    xs = np.ldexp(v, -k)
    ms = float(np.sum(xs)) / n
    d = xs - ms
    spread = float(np.max(np.abs(d)))
    if spread == 0.0:
        return n, math.ldexp(ms, k), 0.0
    dt = np.ldexp(d, spread_shift(spread, n))
    s1 = float(np.sum(dt))
    m2t = max(float(np.sum(dt * dt)) - s1 * s1 / n, 0.0)
    return n, math.ldexp(ms, k), ldexp_saturating(m2t, 2 * (k - spread_shift(spread, n)))


def repair(rows_of, mean_rel, m2, pivots, skipna=False):
    """Recompute, in place, the statistics whose ``mean − pivot``
    (``mean_rel``) or ``M2`` are not finite although their values are.

    ``rows_of(stats)`` returns the values of the statistics at flat
    positions ``stats`` as rows of a 2-D array.  A repaired statistic gets
    ``pivots[s] = mean``, ``mean_rel[s] = 0`` and its ``M2``; one with an
    inf/NaN value (NaN left out with ``skipna``) keeps the kernels' result.
    Returns the positions repaired."""
    with np.errstate(invalid="ignore"):
        suspect = np.flatnonzero(~np.isfinite(mean_rel + m2))
    rows = rows_of(suspect)
    usable = np.isfinite(rows) | (np.isnan(rows) if skipna else False)
    fixed = []
    for j in np.flatnonzero(usable.all(axis=1)):
        s = suspect[j]
        count, mean, m2s = scaled_moments(rows[j], skipna)
        if count and math.isfinite(mean) and not math.isnan(m2s):
            pivots[s], mean_rel[s], m2[s] = mean, 0.0, m2s
            fixed.append(s)
    return np.asarray(fixed, dtype=np.int64)
