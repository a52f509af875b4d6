"""CPU kernels of the normalization family over a :class:`~nbnorm._geometry.Geometry`.

Operands of the plan (``_layout.Plan`` of the geometry's view): forward
``(x, out, params)``, backward ``(dy, x, dx, params)``, where ``params`` is
the parameter map (element offsets into the flat ``weight``/``bias``
vectors, in the statistics' type, stride 0 where they do not vary).  Per
statistic ``k`` over its ``n`` values ``r``:

- forward: ``(mean − pivot, M2)`` by batch norm's Welford/Chan blocks
  (:func:`~nbnorm._cpu._ranges.welford_range`, or their first-block steps
  for a statistic that is one short run: :func:`run_statistic`), the mean
  as ``hi + lo``, ``invstd = 1/√(M2/n + eps)`` — or for RMS norm
  ``c = 0``, ``invstd = 1/√(M2/n + mean² + eps)`` (two non-negative
  terms: no cancellation) — then ``y = ((x − hi)·invstd − lo·invstd)·w[j]
  + b[j]``, in float32 for float16/float32 data where batch norm's map is
  (:func:`scaled_map`): the statistics and, without weight and bias, ``y``
  are batch norm's over the same axes, bit for bit;
- backward, with ``g = dy·w[j]``, ``x̂ = (x − c)·invstd``: a reduction
  pass (``Σg``, ``Σg·(x − c)``; ``dweight[j] += dy·x̂``, ``dbias[j] += dy``)
  and an elementwise one, ``dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n)`` (RMS:
  without the ``Σg/n`` term, ``dx = r·g − (r³/n)·x·Σ(g·x)``); sums in the
  block-accumulator type over runs of at most ``BLOCK`` values, ``dx`` as
  batch norm's backward map (:func:`dx_pass`).

One work item is one statistic, whose data stay in cache between the
reduction and the elementwise pass (``*_fused``); few or huge statistics,
and layouts whose innermost dimension is kept, take batch norm's reduction
kernels and then :func:`norm_apply` over (statistic, chunk) items.  (Group
and instance norm go through batch norm's kernels in cache and this
module's fused backward beyond it, see :mod:`.family`.)  Parameter
gradients are summed per *part* (a fixed, shape-given range of
statistics) into ``(n_parts, n_params)``
rows in the statistics' type (float32 for float16/float32 data: half the
cache traffic of the per-element updates) and the rows are added in float64
afterwards, in order: the result does not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.extending import overload

from ._access import acc_cast, acc_zero, load, store, unowned, window
from ._jit import (_EXACT, BLOCK, _exact, _inline, _inline_exact, _jit, _pjit, _strict,
                   backward_coefficients, exact_ratio, invstd_of, narrow_coefficients, two_sum)
from ._ranges import run_moments, welford_range
from ._runs import (_count, affine_at, centred, dual_at, finite_or_zero, offset, pivot_at,
                    run_at)
from .inner_reduced import statistic_chunk_item


# ------------------------------------------------------------------ runs
@_inline_exact
def run_scaled(out, oo, so, x, ox, sx, w, b, ow, sw, m, cu, ca, cc):
    """``out = ((x − cu)·ca + cc)·w[j] + b[j]`` over a run, ``j = ow + i·sw``,
    in the type of the coefficients (float32 where :func:`scaled_map`
    narrows them, with float32 ``w``/``b``)."""
    for i in range(m):
        j = ow + i * sw
        store(out, oo + i * so, ((load(x, ox + i * sx) - cu) * ca + cc) * w[j] + b[j])


@_exact
def scaled_at(out, oo, so, x, ox, sx, w, b, ow, sw, m, cu, ca, cc):
    if so == 1 and sx == 1 and sw == 1:
        run_scaled(window(out, oo, m), 0, 1, window(x, ox, m), 0, 1,
                   window(w, ow, m), window(b, ow, m), 0, 1, m, cu, ca, cc)
    else:
        run_scaled(out, oo, so, x, ox, sx, w, b, ow, sw, m, cu, ca, cc)


@_inline
def run_weighted(dy, od, sd, x, ox, sx, w, ow, sw, gw, gb, og, m, c, inv):
    """Over a run, with ``g = dy·w[j]``, ``j = ow + i·sw``: returns
    ``(Σ g, Σ g·(x − c))`` and adds ``dy·(x − c)·inv`` to ``gw[og + i·sw]``,
    ``dy`` to ``gb[…]``; in the block-accumulator type (float32 for
    float16/float32 data, with ``c``, ``inv``, ``w`` of that type), as batch
    norm's dual sums."""
    s1 = acc_zero(x)
    s2 = acc_zero(x)
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
    """``dx = dy·w[j]·inv + (x − c)·cb + cc`` over a run, in the
    coefficients' type (see :func:`dx_pass`)."""
    for i in range(m):
        store(dx, oo + i * so, load(dy, od + i * sd) * w[ow + i * sw] * inv
              + (load(x, ox + i * sx) - c) * cb + cc)


@_exact
def dx_at(dx, oo, so, dy, od, sd, x, ox, sx, w, ow, sw, m, c, inv, cb, cc):
    if sw == 0:
        affine_at(dx, oo, so, dy, od, sd, x, ox, sx, m, 0.0, w[ow] * inv, c, cb, cc, None)
    elif so == 1 and sd == 1 and sx == 1 and sw == 1:
        run_dx(window(dx, oo, m), 0, 1, window(dy, od, m), 0, 1, window(x, ox, m), 0, 1,
               window(w, ow, m), 0, 1, m, c, inv, cb, cc)
    else:
        run_dx(dx, oo, so, dy, od, sd, x, ox, sx, w, ow, sw, m, c, inv, cb, cc)


def dx_pass(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc, one_run):
    """``dx = dy·w[j]·inv + (x − c)·cb + cc`` over one statistic (``one_run``:
    one unit-stride run of ``n`` values in every operand): in float32 for
    float16/float32 data where :func:`nbnorm._welford.narrow_coefficients`
    allows (batch norm's backward map with the parameter read per element),
    else in float64."""


@_exact
def dx_either(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc, one_run):
    if one_run:
        dx_at(dx, ob, 1, dy, db, 1, x, xb, 1, w, pb, 1, n, c, inv, cb, cc)
    else:
        dx_range(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc)


@overload(dx_pass, jit_options={"fastmath": _EXACT, "error_model": "numpy"})
def _dx_pass(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc, one_run):
    if x.dtype == types.float64:
        def wide(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc, one_run):
            dx_either(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc,
                      one_run)
        return wide

    def narrow(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc, one_run):
        ok, _, a32, v32, b32, c32 = narrow_coefficients(0.0, inv, c, cb, cc, True)
        if ok:
            dx_either(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, v32, a32, b32, c32,
                      one_run)
        else:
            dx_either(dx, ob, dy, db, x, xb, pb, rsz, ro, rd, rx, rp, n, w, c, inv, cb, cc,
                      one_run)
    return narrow


# ---------------------------------------------------------- per statistic
@_jit
def statistic(x, xb, rsz, rx, n, eps, rms):
    """``(hi, lo, var, invstd)`` of one statistic by batch norm's Welford/Chan
    blocks (:func:`~nbnorm._cpu._ranges.welford_range`, the same bits as
    batch norm's statistic over the same values): the mean is ``hi + lo``
    (``hi`` rounded, ``lo`` its error); for RMS norm ``hi = lo = 0`` and
    ``var`` is mean(x²) ``= M2/n + mean²``.  NaN where the sums are not
    finite (``family._refit`` redoes those)."""
    pivot = pivot_at(x, xb, rsz, rx, None)
    _, rel, m2 = welford_range(x, xb, rsz, rx, 0, n, pivot, None)
    return finished(pivot, rel, m2, n, eps, rms)


@_strict
def run_statistic(x, xb, n, eps, rms):
    """:func:`statistic` of one unit-stride run of ``n ≤ BLOCK`` values,
    without the block walk (:func:`~nbnorm._cpu._ranges.run_moments`: the
    same bits as :func:`statistic` and batch norm)."""
    pivot = float(finite_or_zero(x, load(x, xb)))    # pivot_at of one run
    rel, m2 = run_moments(x, xb, n, pivot)
    return finished(pivot, rel, m2, n, eps, rms)


@_strict
def finished(pivot, rel, m2, n, eps, rms):
    """``(hi, lo, var, invstd)`` from a statistic's ``(mean − pivot, M2)``."""
    if not (np.isfinite(rel) and np.isfinite(m2)):
        return np.nan, np.nan, np.nan, np.nan
    hi, lo = two_sum(pivot, rel)
    if rms:
        var = mean_square(m2, float(n), hi)
        return 0.0, 0.0, var, invstd_of(var, eps)
    var = exact_ratio(m2, float(n))
    return hi, lo, var, invstd_of(var, eps)


@_strict
def mean_square(m2, n, mean):
    """RMS norm's ``var``: mean(x²) ``= M2/n + mean²`` (two non-negative
    terms: no cancellation), one formula for every path."""
    return m2 / n + mean * mean


@_strict
def rms_statistics(pivots, mean_rel, m2, n, eps, var, inv):
    """:func:`mean_square` and ``invstd`` per statistic from the reduction
    kernels' ``(mean − pivot, M2)`` (the unfused path)."""
    for i in range(pivots.size):
        hi, _ = two_sum(pivots[i], mean_rel[i])
        var[i] = mean_square(m2[i], n, hi)
        inv[i] = invstd_of(var[i], eps)


@_exact
def scaled_range(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, cu, ca, cc):
    pos = a
    while pos < e:
        oo, m = run_at(pos, e, rsz, ro)
        ox, _ = run_at(pos, e, rsz, rx)
        op, _ = run_at(pos, e, rsz, rp)
        scaled_at(out, ob + oo, ro[-1], x, xb + ox, rx[-1], w, b, pb + op, rp[-1], m, cu, ca, cc)
        pos += m


def scaled_map(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, cu, ca, cc):
    """``y = ((x − cu)·ca + cc)·w[j] + b[j]`` over reduction indices
    ``[a, e)`` of one statistic (``rsz`` None: one unit-stride run of
    ``e − a`` values in every operand): in float32 for float16/float32 ``x`` where
    :func:`nbnorm._welford.narrow_coefficients` allows (the coefficients as
    batch norm's map rounds them: the centre's rounding moves into ``cc``),
    else in float64."""


@overload(scaled_map, jit_options={"fastmath": _EXACT, "error_model": "numpy"})
def _scaled_map(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, cu, ca, cc):
    if x.dtype == types.float64:
        def wide(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, cu, ca, cc):
            scaled_range(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, cu, ca, cc)
        return wide

    def narrow(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, cu, ca, cc):
        ok, u32, a32, _, _, c32 = narrow_coefficients(cu, ca, 0.0, 0.0, cc, False)
        if ok:
            scaled_range(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, u32, a32, c32)
        else:
            scaled_range(out, ob, x, xb, pb, rsz, ro, rx, rp, a, e, w, b, cu, ca, cc)
    return narrow


def scaled_run(out, ob, x, xb, pb, m, w, b, cu, ca, cc):
    """:func:`scaled_map` over one unit-stride run of ``m`` values."""


@overload(scaled_run, jit_options={"fastmath": _EXACT, "error_model": "numpy"})
def _scaled_run(out, ob, x, xb, pb, m, w, b, cu, ca, cc):
    if x.dtype == types.float64:
        def wide(out, ob, x, xb, pb, m, w, b, cu, ca, cc):
            scaled_at(out, ob, 1, x, xb, 1, w, b, pb, 1, m, cu, ca, cc)
        return wide

    def narrow(out, ob, x, xb, pb, m, w, b, cu, ca, cc):
        ok, u32, a32, _, _, c32 = narrow_coefficients(cu, ca, 0.0, 0.0, cc, False)
        if ok:
            scaled_at(out, ob, 1, x, xb, 1, w, b, pb, 1, m, u32, a32, c32)
        else:
            scaled_at(out, ob, 1, x, xb, 1, w, b, pb, 1, m, cu, ca, cc)
    return narrow


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
def one_run(plan):
    """Is every statistic of ``plan`` one run of at most ``BLOCK`` values
    (so float32 sums stay short) with unit stride in every operand (forward
    ``x, out, params``; backward ``dy, x, dx, params``)?  The tokens ×
    hidden case of layer and RMS norm."""
    return (plan.red_sizes.size == 1 and plan.red_sizes[0] <= BLOCK
            and not plan.inner_kept and all(int(s) == 1 for s in plan.red_strides[:, 0]))


@_pjit
def norm_forward_fused(x, out, p, w, b, eps, rms, one_run, centre_out, var_out, invstd_out):
    """Statistics and ``y`` of each statistic in one work item; ``w``/``b``
    in the statistics' type.  ``y = (x − hi)·invstd·w + (b − lo·invstd·w)``:
    ``x − hi`` is exact at |mean| ≫ std, so ``y`` keeps no rounding of the
    mean (as batch norm's).  ``one_run``: every statistic is one unit-stride
    run of at most ``BLOCK`` values in every operand (:func:`one_run`), taken
    without the run and block walks."""
    x, out, p, w, b = unowned(x), unowned(out), unowned(p), unowned(w), unowned(b)
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    nk = ksz.size
    for i_ in prange(invstd_out.size):
        k = np.int64(i_)
        s = offset(k, ksz, kstat, nk)
        xb = bases[0] + offset(k, ksz, kstr[0], nk)
        ob = bases[1] + offset(k, ksz, kstr[1], nk)
        pb = bases[2] + offset(k, ksz, kstr[2], nk)
        if one_run:
            hi, lo, var, inv = run_statistic(x, xb, n, eps, rms)
        else:
            hi, lo, var, inv = statistic(x, xb, rsz, rstr[0], n, eps, rms)
        if not np.isfinite(var):   # an inf/NaN value or an overflow: redone by family._refit
            hi = var = inv = np.nan
        elif one_run:
            scaled_run(out, ob, x, xb, pb, n, w, b, hi, inv, -lo * inv)
        else:
            scaled_map(out, ob, x, xb, pb, rsz, rstr[1], rstr[0], rstr[2], 0, n, w, b,
                       hi, inv, -lo * inv)
        centre_out[s] = hi
        var_out[s] = var
        invstd_out[s] = inv


@_pjit
def norm_apply(x, out, p, w, b, centre, scale, shift, chunk, n_chunks):
    """``y = ((x − centre)·scale + shift)·w + b`` with per-statistic
    coefficients, over (statistic, chunk) work items."""
    x, out, p, w, b = unowned(x), unowned(out), unowned(p), unowned(w), unowned(b)
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    nk = ksz.size
    for i_ in prange(scale.size * n_chunks):
        k, s, _, a, e = statistic_chunk_item(i_, n_chunks, chunk, n, ksz, kstat)
        scaled_map(out, bases[1] + offset(k, ksz, kstr[1], nk), x,
                   bases[0] + offset(k, ksz, kstr[0], nk),
                   bases[2] + offset(k, ksz, kstr[2], nk), rsz, rstr[1], rstr[0], rstr[2],
                   a, e, w, b, float(centre[s]), float(scale[s]), float(shift[s]))


@_pjit
def norm_backward_fused(dy, x, dx, p, w, centre, invstd, rms, one_run, n_parts, gw, gb):
    """``dx`` and the parameter gradients; part ``q`` handles statistics
    ``[q·S/n_parts, (q+1)·S/n_parts)`` (plan order) and sums into row ``q``
    of the flat ``(n_parts, n_params)`` ``gw``/``gb``.  ``one_run``: every
    statistic is one unit-stride run of at most ``BLOCK`` values in all
    operands (:func:`one_run`), taken whole without the run bookkeeping.
    ``w``, ``gw``, ``gb`` in the statistics' type."""
    dy, x, dx, p, w = unowned(dy), unowned(x), unowned(dx), unowned(p), unowned(w)
    gw, gb = unowned(gw), unowned(gb)
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
            ca, ia = acc_cast(x, c), acc_cast(x, inv)
            if one_run:
                s1, s2 = weighted_at(dy, db, 1, x, xb, 1, w, pb, 1, gw, gb, q * n_params + pb,
                                     n, ca, ia)
            else:
                s1, s2 = weighted_sums(dy, db, x, xb, pb, gw, gb, q * n_params, rsz, rstr[0],
                                       rstr[1], rstr[3], n, w, ca, ia)
            if rms:
                s1 = 0.0
            _, cb, cc = backward_coefficients(float(n), inv, 1.0, float(s1), float(s2), True)
            dx_pass(dx, ob, dy, db, x, xb, pb, rsz, rstr[2], rstr[0], rstr[1], rstr[3], n, w,
                    c, inv, cb, cc, one_run)
