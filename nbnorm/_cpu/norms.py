"""CPU kernels of the normalization family over a :class:`~nbnorm._geometry.Geometry`.

Operands of the plan (``_layout.Plan`` of the geometry's view): forward
``(x, out, params)``, backward ``(dy, x, dx, params)``, where ``params`` is
the parameter map (element offsets into the flat float64 ``weight``/``bias``
vectors, stride 0 where they do not vary).  Per statistic ``k`` over its
``n`` values ``r``:

- forward: ``(n, mean, M2)`` by the Welford/Chan blocks of
  :func:`~nbnorm._cpu._ranges.welford_range` (about a pivot; never
  E[x²] − E[x]²), ``c = mean``, ``invstd = 1/√(M2/n + eps)`` — or for RMS
  norm ``c = 0``, ``invstd = 1/√(M2/n + mean² + eps)`` (a sum of two
  non-negative terms: no cancellation) — then
  ``y = (x − c)·invstd·w[j] + b[j]``;
- backward, with ``g = dy·w[j]``, ``x̂ = (x − c)·invstd``: a reduction
  pass (``Σg``, ``Σg·(x − c)``; ``dweight[j] += dy·x̂``, ``dbias[j] += dy``)
  and an elementwise one, ``dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n)`` (RMS:
  without the ``Σg/n`` term, ``dx = r·g − (r³/n)·x·Σ(g·x)``).

One work item is one statistic, whose data stay in cache between the
reduction and the elementwise pass (``*_fused``); few or huge statistics
take the chunked reduction of :mod:`.kernels` and then :func:`norm_apply`
over (statistic, chunk) items.  (Group and instance norm forward go through
batch norm's kernels instead, see :mod:`.family`.)  Parameter gradients are summed per *part*
(a fixed, shape-given range of statistics) into ``(n_parts, n_params)``
rows in the statistics' type (float32 for float16/float32 data: half the
cache traffic of the per-element updates) and the rows are added in float64
afterwards, in order: the result does not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._access import load, store, window
from ._jit import (BLOCK, _exact, _inline, _inline_exact, _jit, _pjit, backward_coefficients,
                   exact_ratio, invstd_of)
from ._ranges import welford_range
from ._runs import _count, affine_at, centred, dual_at, offset, pivot_at, run_at
from .inner_reduced import statistic_chunk_item


# ------------------------------------------------------------------ runs
@_inline_exact
def run_scaled(out, oo, so, x, ox, sx, w, b, ow, sw, m, c, inv):
    """``out = (x − c)·inv·w[j] + b[j]`` over a run, ``j = ow + i·sw``."""
    for i in range(m):
        j = ow + i * sw
        store(out, oo + i * so, (load(x, ox + i * sx) - c) * inv * w[j] + b[j])


@_exact
def scaled_at(out, oo, so, x, ox, sx, w, b, ow, sw, m, c, inv):
    if so == 1 and sx == 1 and sw == 1:
        run_scaled(window(out, oo, m), 0, 1, window(x, ox, m), 0, 1,
                   window(w, ow, m), window(b, ow, m), 0, 1, m, c, inv)
    else:
        run_scaled(out, oo, so, x, ox, sx, w, b, ow, sw, m, c, inv)


@_inline
def run_weighted(dy, od, sd, x, ox, sx, w, ow, sw, gw, gb, og, m, c, inv):
    """Over a run, with ``g = dy·w[j]``, ``j = ow + i·sw``: returns
    ``(Σ g, Σ g·(x − c))`` and adds ``dy·(x − c)·inv`` to ``gw[og + i·sw]``,
    ``dy`` to ``gb[…]``."""
    s1 = 0.0
    s2 = 0.0
    for i in range(m):
        d = load(dy, od + i * sd)
        xc = centred(load(x, ox + i * sx), c)
        g = d * w[ow + i * sw]
        s1 += g
        s2 += g * xc
        gw[og + i * sw] += d * xc * inv
        gb[og + i * sw] += d
    return s1, s2


@_jit
def weighted_at(dy, od, sd, x, ox, sx, w, ow, sw, gw, gb, og, m, c, inv):
    """:func:`run_weighted`; a run whose parameter is one (``sw = 0``) takes
    the plain sums ``Σ dy``, ``Σ dy·(x − c)`` and scales them once."""
    if sw == 0:
        t1, t2 = dual_at(dy, od, sd, x, ox, sx, m, c)
        gw[og] += t2 * inv
        gb[og] += t1
        return w[ow] * t1, w[ow] * t2
    if sd == 1 and sx == 1 and sw == 1:
        return run_weighted(window(dy, od, m), 0, 1, window(x, ox, m), 0, 1, window(w, ow, m),
                            0, 1, window(gw, og, m), window(gb, og, m), 0, m, c, inv)
    return run_weighted(dy, od, sd, x, ox, sx, w, ow, sw, gw, gb, og, m, c, inv)


@_inline_exact
def run_dx(dx, oo, so, dy, od, sd, x, ox, sx, w, ow, sw, m, c, inv, cb, cc):
    """``dx = dy·w[j]·inv + (x − c)·cb + cc`` over a run."""
    for i in range(m):
        store(dx, oo + i * so, load(dy, od + i * sd) * w[ow + i * sw] * inv
              + (load(x, ox + i * sx) - c) * cb + cc)


@_exact
def dx_at(dx, oo, so, dy, od, sd, x, ox, sx, w, ow, sw, m, c, inv, cb, cc):
    if sw == 0:
        affine_at(dx, oo, so, dy, od, sd, x, ox, sx, m, 0.0, w[ow] * inv, c, cb, cc, False)
    elif so == 1 and sd == 1 and sx == 1 and sw == 1:
        run_dx(window(dx, oo, m), 0, 1, window(dy, od, m), 0, 1, window(x, ox, m), 0, 1,
               window(w, ow, m), 0, 1, m, c, inv, cb, cc)
    else:
        run_dx(dx, oo, so, dy, od, sd, x, ox, sx, w, ow, sw, m, c, inv, cb, cc)


# ---------------------------------------------------------- per statistic
@_jit
def statistic(x, xb, rsz, rx, n, eps, rms):
    """``(c, var, invstd)`` of one statistic (see the module docstring;
    ``var`` is mean(x²) for RMS)."""
    pivot = pivot_at(x, xb, rsz, rx, None)
    _, mean, m2 = welford_range(x, xb, rsz, rx, 0, n, pivot, None)
    mean += pivot
    var = exact_ratio(m2, float(n))
    if rms:
        var += mean * mean
        return 0.0, var, invstd_of(var, eps)
    return mean, var, invstd_of(var, eps)


@_exact
def scaled_range(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, c, inv):
    pos = a
    while pos < e:
        oo, m = run_at(pos, e, rsz, ro)
        ox, _ = run_at(pos, e, rsz, rx)
        op, _ = run_at(pos, e, rsz, rp)
        scaled_at(out, ob + oo, ro[-1], x, xb + ox, rx[-1], w, b, pb + op, rp[-1], m, c, inv)
        pos += m


@_jit
def weighted_sums(dy, db, x, xb, pb, gw, gb, gbase, rsz, rd, rx, rp, n, w, c, inv):
    """``(Σ g, Σ g·(x − c))`` of a statistic, and its parameter gradients
    into ``gw``/``gb`` (from ``gbase``); runs split at ``BLOCK`` elements so
    that float32 sums stay short."""
    t1 = 0.0
    t2 = 0.0
    pos = 0
    while pos < n:
        od, m = run_at(pos, n, rsz, rd)
        m = min(m, BLOCK)
        ox, _ = run_at(pos, n, rsz, rx)
        op, _ = run_at(pos, n, rsz, rp)
        s1, s2 = weighted_at(dy, db + od, rd[-1], x, xb + ox, rx[-1], w, pb + op, rp[-1], gw, gb,
                             gbase + pb + op, m, c, inv)
        t1 += s1
        t2 += s2
        pos += m
    return t1, t2


@_exact
def dx_range(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc):
    pos = 0
    while pos < n:
        oo, m = run_at(pos, n, rsz, ro)
        od, _ = run_at(pos, n, rsz, rd)
        ox, _ = run_at(pos, n, rsz, rx)
        op, _ = run_at(pos, n, rsz, rp)
        dx_at(dx, ob + oo, ro[-1], dy, db + od, rd[-1], x, xb + ox, rx[-1], w, pb + op, rp[-1],
              m, c, inv, cb, cc)
        pos += m


# ------------------------------------------------------------------ kernels
@_pjit
def norm_forward_fused(x, out, p, w, b, eps, rms, centre_out, var_out, invstd_out):
    """Statistics and ``y`` of each statistic in one work item."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    nk = ksz.size
    for i_ in prange(invstd_out.size):
        k = np.int64(i_)
        s = offset(k, ksz, kstat, nk)
        xb = bases[0] + offset(k, ksz, kstr[0], nk)
        c, var, inv = statistic(x, xb, rsz, rstr[0], n, eps, rms)
        if np.isfinite(var):
            scaled_range(out, bases[1] + offset(k, ksz, kstr[1], nk), x, xb,
                         bases[2] + offset(k, ksz, kstr[2], nk), rsz, rstr[1], rstr[0],
                         rstr[2], 0, n, w, b, c, inv)
        else:   # an inf/NaN value or an overflow: redone by family._refit
            c = var = inv = np.nan
        centre_out[s] = c
        var_out[s] = var
        invstd_out[s] = inv


@_pjit
def norm_apply(x, out, p, w, b, centre, invstd, chunk, n_chunks):
    """``y`` from given statistics, over (statistic, chunk) work items."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    nk = ksz.size
    for i_ in prange(invstd.size * n_chunks):
        k, s, _, a, e = statistic_chunk_item(i_, n_chunks, chunk, n, ksz, kstat)
        scaled_range(out, bases[1] + offset(k, ksz, kstr[1], nk), x,
                     bases[0] + offset(k, ksz, kstr[0], nk),
                     bases[2] + offset(k, ksz, kstr[2], nk), rsz, rstr[1], rstr[0], rstr[2],
                     a, e, w, b, centre[s], invstd[s])


@_pjit
def norm_backward_fused(dy, x, dx, p, w, centre, invstd, rms, one_run, n_parts, gw, gb):
    """``dx`` and the parameter gradients; part ``q`` handles statistics
    ``[q·S/n_parts, (q+1)·S/n_parts)`` (plan order) and sums into row ``q``
    of the flat ``(n_parts, n_params)`` ``gw``/``gb``.  ``one_run``: every
    statistic is one unit-stride run of at most ``BLOCK`` values in all
    operands (short rows, :func:`.norm_rows.short_rows`), taken whole without
    the run bookkeeping."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    nk = ksz.size
    n_stats = invstd.size
    n_params = gw.size // n_parts
    for q_ in prange(n_parts):
        q = np.int64(q_)
        for k in range(q * n_stats // n_parts, (q + 1) * n_stats // n_parts):
            s = offset(k, ksz, kstat, nk)
            db = bases[0] + offset(k, ksz, kstr[0], nk)
            xb = bases[1] + offset(k, ksz, kstr[1], nk)
            ob = bases[2] + offset(k, ksz, kstr[2], nk)
            pb = bases[3] + offset(k, ksz, kstr[3], nk)
            c = float(centre[s])
            inv = float(invstd[s])
            if one_run:
                s1, s2 = weighted_at(dy, db, 1, x, xb, 1, w, pb, 1, gw, gb, q * n_params + pb,
                                     n, c, inv)
            else:
                s1, s2 = weighted_sums(dy, db, x, xb, pb, gw, gb, q * n_params, rsz, rstr[0],
                                       rstr[1], rstr[3], n, w, c, inv)
            if rms:
                s1 = 0.0
            _, cb, cc = backward_coefficients(float(n), inv, 1.0, s1, s2, True)
            if one_run:
                dx_at(dx, ob, 1, dy, db, 1, x, xb, 1, w, pb, 1, n, c, inv, cb, cc)
            else:
                dx_range(dx, ob, dy, db, x, xb, pb, rsz, rstr[2], rstr[0], rstr[1], rstr[3], n,
                         w, c, inv, cb, cc)
