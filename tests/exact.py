"""Exact rational references (``fractions.Fraction``) for exactness claims.

Every float is a dyadic rational, so sums, means and squared deviations of
the stored values are computed without any rounding; the only rounding is
the final conversion to float.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np


def exact_moments(x, axis):
    """``(mean, var)`` (biased) of ``x`` over ``axis`` as object arrays of
    ``Fraction``s, statistic-shaped (``axis=None`` reduces everything)."""
    x = np.asarray(x)
    axes = tuple(range(x.ndim)) if axis is None else tuple(
        sorted(a % x.ndim for a in (axis if isinstance(axis, tuple) else (axis,))))
    kept = [d for d in range(x.ndim) if d not in axes]
    moved = np.moveaxis(x, kept + list(axes), range(x.ndim))
    stat = moved.shape[:len(kept)]
    flat = moved.reshape(int(np.prod(stat, dtype=np.int64)), -1)
    means = np.empty(flat.shape[0], dtype=object)
    vars_ = np.empty(flat.shape[0], dtype=object)
    for k, row in enumerate(flat):
        vals = [Fraction(float(v)) for v in row]
        n = len(vals)
        s1 = sum(vals, Fraction(0))
        s2 = sum((v * v for v in vals), Fraction(0))
        means[k] = s1 / n
        vars_[k] = (s2 - s1 * s1 / n) / n   # exact in rationals: no cancellation
    return means.reshape(stat), vars_.reshape(stat)


def relative_error(got, exact):
    """Largest ``|got − exact| / |exact|`` over the elements, computed exactly
    (``got`` a float array, ``exact`` an object array of Fractions)."""
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    exact = np.asarray(exact, dtype=object).reshape(-1)
    worst = 0.0
    for g, e in zip(got, exact):
        if not np.isfinite(g):
            return float("inf")
        err = abs(Fraction(float(g)) - e)
        worst = max(worst, float(err / abs(e)) if e != 0 else float(err != 0) * float("inf"))
    return worst
