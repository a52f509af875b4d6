"""Layer and RMS norm over short contiguous rows (``n ≤ SHORT_ROW``
values per statistic, one unit-stride run in ``x``, ``out`` and the
parameters: ``(tokens, hidden)`` with a small hidden size).

The general fused kernel (:func:`.norms.norm_forward_fused`) walks a
statistic through the plan's runs and Welford blocks; for a 64-value row
that bookkeeping costs more than the row.  Here a row is three passes over
memory it has just loaded into L1, in float64:

    p = x₀ (0 if not finite),  c = p + Σ(x − p)/n,
    t₁ = Σ(x − c),  t₂ = Σ(x − c)²,  d = t₁/n,  var = (t₂ − t₁·d)/n   (c + d = mean)
    y = ((x − c) − d)·invstd·w + b

``x − c`` is exact for ``x`` within a factor 2 of ``c`` and ``d`` is tiny, so
the mean is never rounded to ``ulp(|mean|)`` before it is subtracted.  RMS
norm: ``var = Σx²/n`` (``c = d = 0``).  The backward is the fused one of
:mod:`.norms` with each row taken whole (``one_run``).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._access import load, store, window
from ._jit import _exact, _inline, _jit, _pjit, exact_ratio, invstd_of
from ._runs import centred, offset

SHORT_ROW = 2048


@_inline
def _row_sum(x, m, c):
    """``Σ(x − c)`` in float64 over a window."""
    s = 0.0
    for i in range(m):
        s += centred(float(load(x, i)), c)
    return s


@_inline
def _row_sums(x, m, c):
    """``Σ(x − c)`` and ``Σ(x − c)²`` in float64 over a window."""
    s1 = 0.0
    s2 = 0.0
    for i in range(m):
        v = centred(float(load(x, i)), c)
        s1 += v
        s2 += v * v
    return s1, s2


@_jit
def row_statistic(x, m, eps, rms):
    """``(c, d, var, invstd)`` of a window of ``m`` values (see the module docstring)."""
    n = float(m)
    if rms:
        _, s2 = _row_sums(x, m, 0.0)
        var = exact_ratio(s2, n)
        return 0.0, 0.0, var, invstd_of(var, eps)
    p = float(load(x, 0))
    if not np.isfinite(p):
        p = 0.0
    c = p + exact_ratio(_row_sum(x, m, p), n)
    if not np.isfinite(c):
        c = p
    t1, t2 = _row_sums(x, m, c)
    d = exact_ratio(t1, n)
    var = exact_ratio(max(t2 - t1 * d, 0.0), n)
    return c, d, var, invstd_of(var, eps)


@_exact
def _row_scaled(out, x, w, b, m, c, d, inv):
    """``out = ((x − c) − d)·inv·w + b`` over windows; compiled on its own,
    without reassociation (inlined into a fast-math kernel LLVM would
    rewrite ``(x − c) − d`` as ``x − (c + d)``, rounding the mean)."""
    for i in range(m):
        store(out, i, ((float(load(x, i)) - c) - d) * inv * w[i] + b[i])


@_pjit
def rows_forward(x, out, p, w, b, eps, rms, centre_out, var_out, invstd_out):
    """Statistics and ``y`` of each short row: work item = one statistic;
    operands ``(x, out, params)`` as in :func:`.norms.norm_forward_fused`."""
    ksz, kstat, kstr, rsz, _, bases = p
    m = rsz[0]
    nk = ksz.size
    for i_ in prange(invstd_out.size):
        k = np.int64(i_)
        s = offset(k, ksz, kstat, nk)
        xw = window(x, bases[0] + offset(k, ksz, kstr[0], nk), m)
        pb = bases[2] + offset(k, ksz, kstr[2], nk)
        c, d, var, inv = row_statistic(xw, m, eps, rms)
        if np.isfinite(var):
            _row_scaled(window(out, bases[1] + offset(k, ksz, kstr[1], nk), m), xw,
                        window(w, pb, m), window(b, pb, m), m, c, d, inv)
        else:   # an inf/NaN value or an overflow: redone by family._refit
            c = d = var = inv = np.nan
        centre_out[s] = c + d
        var_out[s] = var
        invstd_out[s] = inv


def short_rows(plan):
    """Is every statistic of ``plan`` one run of at most ``SHORT_ROW`` values
    (≤ ``BLOCK``, so float32 row sums stay short) with unit stride in every
    operand (forward ``x, out, params``; backward ``dy, x, dx, params``)?"""
    return (plan.red_sizes.size == 1 and plan.red_sizes[0] <= SHORT_ROW
            and not plan.inner_kept and all(int(s) == 1 for s in plan.red_strides[:, 0]))
