"""CUDA kernels over statistics (one thread per statistic or parameter):
merging the element kernels' per-chunk partials in float64 and the
coefficients of the element passes.  The formulas are
:mod:`nbnorm._welford`'s, shared with the CPU backend."""
from __future__ import annotations

from numba import cuda, float64

import math

from .. import _welford
from .device import (TPB, backward_coefficients, chan_merge, forward_scale, invstd_of, offset,
                     welford_block_reduce)

mean_shift = cuda.jit(device=True)(_welford.mean_shift)
spread_shift = cuda.jit(device=True)(_welford.spread_shift)
ldexp_saturating = cuda.jit(device=True)(_welford.ldexp_saturating)


@cuda.jit(device=True)
def rescaled_moments(x, at, rs, rst, p, nr, n, skipna):
    """``(count, mean, M2, ok)`` of one statistic's values (plan row ``p``
    from ``at``) by :mod:`nbnorm._welford`'s power-of-two rescaling, one
    thread, four passes: for the rare statistic whose sums overflowed.
    ``ok`` is false when a value is inf or NaN (NaNs left out with
    ``skipna``): the merged result then stands."""
    cnt = 0
    top = 0.0
    for r in range(n):
        v = float64(x[at + offset(r, rs, rst, p, nr)])
        if skipna and v != v:
            continue
        if not (v - v == 0):
            return 0, 0.0, 0.0, False
        cnt += 1
        top = max(top, abs(v))
    if cnt == 0 or top == 0.0:
        return cnt, 0.0, 0.0, cnt > 0
    k = mean_shift(top, cnt)
    total = 0.0
    for r in range(n):
        v = float64(x[at + offset(r, rs, rst, p, nr)])
        if v == v:
            total += math.ldexp(v, -k)
    ms = total / cnt
    spread = 0.0
    for r in range(n):
        v = float64(x[at + offset(r, rs, rst, p, nr)])
        if v == v:
            spread = max(spread, abs(math.ldexp(v, -k) - ms))
    if spread == 0.0:
        return cnt, math.ldexp(ms, k), 0.0, True
    j = spread_shift(spread, cnt)
    s1 = 0.0
    s2 = 0.0
    for r in range(n):
        v = float64(x[at + offset(r, rs, rst, p, nr)])
        if v == v:
            d = math.ldexp(math.ldexp(v, -k) - ms, j)
            s1 += d
            s2 += d * d
    return cnt, math.ldexp(ms, k), ldexp_saturating(max(s2 - s1 * s1 / cnt, 0.0), 2 * (k - j)), True


@cuda.jit
def finalize_welford(part_count, part_mean, part_m2, pivots, n_chunks, n_stats, lanes, inv_dof,
                     training, rms, eps, w, has_w, bias, has_b, x, ks, ss, kst, rs, rst, bases,
                     p, skipna, n, keep_centre, mean_out, var_out, invstd_out, centre, alpha,
                     beta):
    """Chan-merge the ``n_chunks`` partials of each statistic in float64:
    ``lanes`` threads per statistic (a power of two ≤ 32; lane ``l`` merges
    chunks ``l, l + lanes, …``), then the lanes by warp shuffles — a split
    reduction of 1,024 chunks is 32 merges deep per thread, not 1,024.

    The partials are of ``d = x − pivots[s]``: ``mean = pivots[s] + mean(d)``,
    ``var = M2·inv_dof`` (``rms``: ``var + mean²``, i.e. ``mean(x²)`` for
    ``inv_dof = 1/n``); with ``training``: ``invstd = 1/√(var + eps)`` and the
    coefficients of ``y = (x − c)·α + β``: ``centre`` (flat ``(2, n_stats)``)
    holds the pivot and ``mean(d)`` for ``x − mean = (x − pivot) − mean(d)``
    (zeros for ``rms``: ``c = 0``), ``α = weight·invstd``, ``β = bias``
    (weight/bias 1/0 when absent).

    A statistic whose merged mean or ``M2`` is not finite although its
    values are (the sums about the pivot overflowed near the top of the
    range) is recomputed from ``x`` (plan row ``p``, statistic ``k`` in plan
    order) by :func:`rescaled_moments`; with an infinite variance (α = 0)
    the centre is 0, so that ``y = β`` rather than ``(x − mean)·0 = NaN``
    (``keep_centre``: the centre is the mean all the same, for states).
    """
    sh0 = cuda.shared.array(TPB, float64)
    sh1 = cuda.shared.array(TPB, float64)
    sh2 = cuda.shared.array(TPB, float64)
    t = cuda.grid(1)
    k = t // lanes
    lane = t - k * lanes
    nk = ks.size
    s = offset(k, ks, ss, 0, nk) if k < n_stats else n_stats
    cn = 0.0
    cm = 0.0
    cv = 0.0
    if k < n_stats:
        for c in range(lane, n_chunks, lanes):
            j = c * n_stats + s
            cn, cm, cv = chan_merge(cn, cm, cv, float64(part_count[j]), float64(part_mean[j]),
                                    float64(part_m2[j]))
    # every thread of the block takes part in the merge (shuffles, barriers)
    cn, cm, cv = welford_block_reduce(cn, cm, cv, cuda.threadIdx.x, lane, 1, lanes, sh0, sh1,
                                      sh2)
    if k >= n_stats or lane != 0:
        return
    pivot = pivots[s]
    if not (cm - cm == 0 and cv - cv == 0 and pivot + cm - (pivot + cm) == 0):
        rn, rm, rv, ok = rescaled_moments(x, bases[p] + offset(k, ks, kst, p, nk), rs, rst, p,
                                          rs.size, n, skipna)
        if ok:
            pivot, cm, cv = rm, 0.0, rv
    mean = pivot + cm
    var = cv * inv_dof
    if rms:
        var += mean * mean
    mean_out[s] = mean
    var_out[s] = var
    if training:
        inv = invstd_of(var, eps)
        wt = w[s] if has_w else 1.0
        invstd_out[s] = inv
        flat = rms or (forward_scale(inv, wt) == 0.0 and not keep_centre)
        centre[s] = 0.0 if flat else pivot
        centre[n_stats + s] = 0.0 if flat else cm
        alpha[s] = forward_scale(inv, wt)
        beta[s] = bias[s] if has_b else 0.0


@cuda.jit(device=True)
def chunk_sums(part_s1, part_s2, n_chunks, n_stats, s):
    """Statistic ``s``'s two partial sums added over the chunks, in float64."""
    t1 = 0.0
    t2 = 0.0
    for c in range(n_chunks):
        t1 += float64(part_s1[c * n_stats + s])
        t2 += float64(part_s2[c * n_stats + s])
    return t1, t2


@cuda.jit
def finalize_sums(part_s1, part_s2, n_chunks, n_stats, n, inv, w, has_w, training, rms,
                  dweight, dbias, ca, cb, cc):
    """Sum the partials of ``(Σg, Σg·(x − c))`` in float64; write
    ``dbias = Σg``, ``dweight = Σg·(x − c)·invstd`` and the ``(a, b, c)`` of
    ``dx = g·a + (x − c)·b + c`` (``_welford.backward_coefficients``; for
    ``rms`` the ``Σg`` term is absent: ``dx = r·g − (r³/n)·x·Σ(g·x)``)."""
    s = cuda.grid(1)
    if s >= n_stats:
        return
    t1, t2 = chunk_sums(part_s1, part_s2, n_chunks, n_stats, s)
    wt = w[s] if has_w else 1.0
    a, b, c3 = backward_coefficients(float64(n), inv[s], wt, 0.0 if rms else t1, t2, training)
    dbias[s] = t1
    dweight[s] = t2 * inv[s]
    ca[s] = a
    cb[s] = b
    cc[s] = c3


@cuda.jit
def sum_partials(part_s1, part_s2, n_chunks, n_stats, dweight, dbias):
    """``dbias = Σ part_s1``, ``dweight = Σ part_s2`` over the chunks, in float64."""
    s = cuda.grid(1)
    if s >= n_stats:
        return
    t1, t2 = chunk_sums(part_s1, part_s2, n_chunks, n_stats, s)
    dbias[s] = t1
    dweight[s] = t2


@cuda.jit
def inference_coefficients(var, w, has_w, bias, has_b, eps, alpha, beta):
    """``(α, β)`` of ``y = (x − mean)·α + β = (x − mean)/√(var + eps)·w + b``
    (the mean is the element pass's float64 ``(1, n_stats)`` centre)."""
    s = cuda.grid(1)
    if s >= var.size:
        return
    wt = w[s] if has_w else 1.0
    alpha[s] = forward_scale(invstd_of(var[s], eps), wt)
    beta[s] = bias[s] if has_b else 0.0


@cuda.jit
def gather(src, base, sizes, strides, vector):
    """``vector[i] = src[base + offset(i, sizes, strides)]`` (C order, converting)."""
    i = cuda.grid(1)
    if i < vector.size:
        vector[i] = src[base + offset(i, sizes, strides, 0, sizes.size)]


@cuda.jit
def update_running(run, base, sizes, strides, batch, momentum, scale):
    """``run ← (1 − momentum)·run + momentum·scale·batch`` where ``batch`` is
    finite; other entries are left as they are (nothing is counted: reading a
    count back would synchronize the host with the stream)."""
    i = cuda.grid(1)
    if i >= batch.size:
        return
    b = float64(batch[i]) * scale
    if b - b == 0.0:
        j = base + offset(i, sizes, strides, 0, sizes.size)
        run[j] = (1.0 - momentum) * float64(run[j]) + momentum * b
