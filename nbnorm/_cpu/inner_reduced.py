"""Reductions whose innermost dimension is reduced (NCHW over (0, 2, 3),
rows): work items are (statistic, chunk of its reduction range); the fused
training forward and backward (one statistic per item, its data in cache).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._access import unowned
from ._jit import (_inline, _jit, _pjit, backward_coefficients, exact_ratio, forward_scale,
                   invstd_of, two_sum)
from ._ranges import (dual_sums_range, map_range, one_run, run_dual_sums, run_moments,
                      welford_range)
from ._runs import _count, offset, pivot_at


# ------------------------------------------------ reduction-inner kernels
@_inline
def statistic_chunk_item(i_, n_chunks, chunk, n, ksz, kstat):
    """(statistic in plan order, its position in the statistic arrays, chunk,
    reduction range [a, b)) of a reduction-inner work item."""
    item = np.int64(i_)
    k = item // n_chunks
    c = item - k * n_chunks
    a = c * chunk
    return k, offset(k, ksz, kstat, ksz.size), c, a, min(a + chunk, n)


@_jit
def next_base(k, n_stats, ksz, kstr, base):
    """Offset of statistic ``k + 1`` in an operand (−1 after the last): the
    fused forward prefetches it while it writes statistic ``k``."""
    return base + offset(k + 1, ksz, kstr, ksz.size) if k + 1 < n_stats else -1


@_pjit
def moments_inner_reduced(x, p, chunk, n_chunks, part_count, part_mean, part_m2, pivots):
    """Chunk partials ``(mean − pivot, M2)`` into ``part_*[c, stat]`` and the
    pivots into ``pivots[stat]``; ``p`` = plan arrays.  ``part_count``: None,
    or the chunks' counts of non-NaN values (NaNs are then left out)."""
    x, part_mean, part_m2 = unowned(x), unowned(part_mean), unowned(part_m2)
    pivots, counts = unowned(pivots), unowned(part_count)  # (see moments_inner_kept)
    ksz, kstat, kstr, rsz, rstr, bases = unowned(p)
    n = _count(rsz)
    n_stats = part_mean.shape[1]
    whole = part_count is None and n_chunks == 1 and one_run(rsz, rstr)
    for i_ in prange(n_stats * n_chunks):
        if whole:
            k = np.int64(i_)
            s = offset(k, ksz, kstat, ksz.size)
            xb = bases[0] + offset(k, ksz, kstr[0], ksz.size)
            pivot = pivot_at(x, xb, rsz, rstr[0], None)
            part_mean[0, s], part_m2[0, s] = run_moments(x, xb, n, pivot)
            pivots[s] = pivot
            continue
        k, s, c, a, b = statistic_chunk_item(i_, n_chunks, chunk, n, ksz, kstat)
        xb = bases[0] + offset(k, ksz, kstr[0], ksz.size)
        pivot = pivot_at(x, xb, rsz, rstr[0], counts)
        nc, part_mean[c, s], part_m2[c, s] = welford_range(x, xb, rsz, rstr[0], a, b, pivot,
                                                           counts)
        if part_count is not None:
            counts[c, s] = nc
        if c == 0:
            pivots[s] = pivot


@_pjit
def dual_sums_inner_reduced(dy, x, p, mean, chunk, n_chunks, part_s1, part_s2):
    """Chunk partials of ``Σ dy`` and ``Σ dy·(x − mean)``; operands (dy, x)."""
    dy, x, mean, part_s1, part_s2 = (unowned(dy), unowned(x), unowned(mean), unowned(part_s1),
                                     unowned(part_s2))
    ksz, kstat, kstr, rsz, rstr, bases = unowned(p)
    n = _count(rsz)
    n_stats = part_s1.shape[1]
    whole = n_chunks == 1 and one_run(rsz, rstr)
    for i_ in prange(n_stats * n_chunks):
        k, s, c, a, b = statistic_chunk_item(i_, n_chunks, chunk, n, ksz, kstat)
        db = bases[0] + offset(k, ksz, kstr[0], ksz.size)
        xb = bases[1] + offset(k, ksz, kstr[1], ksz.size)
        if whole:
            part_s1[0, s], part_s2[0, s] = run_dual_sums(dy, db, x, xb, n, mean[s])
        else:
            part_s1[c, s], part_s2[c, s] = dual_sums_range(dy, db, x, xb, rsz, rstr[0], rstr[1],
                                                           a, b, mean[s])


@_pjit
def forward_fused(x, out, p, weight, bias, eps, mean_out, var_out, invstd_out, stream, ahead):
    """Training forward, one statistic per work item, its data still in cache
    for the normalization pass: one read of ``x`` from memory, one write
    (streaming stores with ``stream``, see :func:`._runs.affine_at`; with
    ``ahead`` the next statistic is prefetched during the normalization pass,
    see :func:`._ranges.affine_range`).

    The mean is ``hi + lo`` (``hi`` rounded, ``lo`` its error) and
    ``y = (x − hi)·α + (bias − lo·α)``: at |mean| ≫ std ``x − hi`` is exact,
    so y is not left with the rounding of the mean (ulp(mean)·invstd).
    A statistic whose sums are not finite is left NaN and its ``y``
    unwritten (see ``backend._refit``)."""
    x, out, weight, bias = unowned(x), unowned(out), unowned(weight), unowned(bias)
    ksz, kstat, kstr, rsz, rstr, bases = unowned(p)
    n = _count(rsz)
    whole = one_run(rsz, rstr[:1])
    for i_ in prange(mean_out.size):
        k = np.int64(i_)
        s = offset(k, ksz, kstat, ksz.size)
        xb = bases[0] + offset(k, ksz, kstr[0], ksz.size)
        pivot = pivot_at(x, xb, rsz, rstr[0], None)
        if whole:
            relative, m2 = run_moments(x, xb, n, pivot)
        else:
            _, relative, m2 = welford_range(x, xb, rsz, rstr[0], 0, n, pivot, None)
        if np.isfinite(relative) and np.isfinite(m2):
            mean, lo = two_sum(pivot, relative)
            var = exact_ratio(m2, float(n))
            invstd = invstd_of(var, eps)
            alpha = forward_scale(invstd, weight[s])
            map_range(out, bases[1] + offset(k, ksz, kstr[1], ksz.size), x, xb, None, 0,
                      rsz, rstr[1], rstr[0], rstr[0], 0, n,
                      mean, alpha, 0.0, 0.0, bias[s] - lo * alpha, stream,
                      next_base(k, mean_out.size, ksz, kstr[0], bases[0]) if ahead else -1)
        else:
            # an inf/NaN value or an overflow: y is left unwritten, the
            # statistic NaN, for the backend to redo (nbnorm._extremes)
            mean = var = invstd = np.nan
        mean_out[s] = mean
        var_out[s] = var
        invstd_out[s] = invstd


@_pjit
def backward_fused(dy, x, x_dx, out, p, mean, invstd, weight, training, dweight, dbias,
                   stream):
    """Backward, one statistic per work item: the reduction and the
    elementwise pass share one read of ``dy`` and ``x`` from memory.
    ``x_dx`` is ``x`` in training and None with frozen statistics."""
    dy, x, out, mean, invstd, weight = (unowned(dy), unowned(x), unowned(out), unowned(mean),
                                        unowned(invstd), unowned(weight))
    ksz, kstat, kstr, rsz, rstr, bases = unowned(p)
    n = _count(rsz)
    whole = one_run(rsz, rstr[:2])
    for i_ in prange(dweight.size):
        k = np.int64(i_)
        s = offset(k, ksz, kstat, ksz.size)
        db = bases[0] + offset(k, ksz, kstr[0], ksz.size)
        xb = bases[1] + offset(k, ksz, kstr[1], ksz.size)
        if whole:
            s1, s2 = run_dual_sums(dy, db, x, xb, n, mean[s])
        else:
            s1, s2 = dual_sums_range(dy, db, x, xb, rsz, rstr[0], rstr[1], 0, n, mean[s])
        ca, cb, cc = backward_coefficients(float(n), float(invstd[s]), float(weight[s]),
                                           s1, s2, training)
        map_range(out, bases[2] + offset(k, ksz, kstr[2], ksz.size), dy, db, x_dx, xb,
                  rsz, rstr[2], rstr[0], rstr[1], 0, n, 0.0, ca, float(mean[s]), cb, cc,
                  stream, -1)
        dweight[s] = s2 * invstd[s]
        dbias[s] = s1
