"""Numba CPU kernels over a :class:`nbnorm._layout.Plan`.

Every full-size operand is a flat 1-D view (float16 as uint16 bits) addressed
through the plan's sizes and strides; see ``_layout`` for the index map.
Kernels come in two loop shapes, chosen by the plan's innermost dimension:

- ``*_inner`` — the innermost dimension is *reduced* (NCHW over (0, 2, 3),
  rows of (N, D)).  A work item is (statistic ``k``, chunk ``c`` of its
  reduction range); it streams along contiguous runs of one statistic.
- ``*_outer`` — the innermost dimension is *kept* (channels-last, axis=0 of
  (N, D)).  A work item is (outer statistic, tile of ≤ ``TILE`` adjacent
  statistics, chunk of rows); each row is a vector over the tile.

Statistics are computed per block of ≤ ``BLOCK`` elements with two passes
over the block while it sits in L1 (shifted sum, then the corrected
two-pass ``M2``), and blocks are merged with Chan's formula
(:mod:`nbnorm._welford`): one read of memory, no division per element.
Chunk partials land in ``(n_chunks, n_stats)`` arrays merged by
``merge_moments`` / ``merge_sums``; chunking depends only on the shape, so
results do not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import _welford
from ._access import acc_zero, load, store

BLOCK = 4096    # elements per Welford block (16 KiB of float32: stays in L1)
TILE = 512      # adjacent statistics per channels-last work item

_FAST = {"reassoc", "contract", "nsz", "arcp"}   # NaN/inf still propagate
_jit = njit(cache=True, fastmath=_FAST)
_pjit = njit(cache=True, fastmath=_FAST, parallel=True)

chan_merge = njit(cache=True)(_welford.chan_merge)
shifted_moments = njit(cache=True)(_welford.shifted_moments)
invstd_of = njit(cache=True)(_welford.invstd_of)
forward_coefficients = njit(cache=True)(_welford.forward_coefficients)
backward_coefficients = njit(cache=True)(_welford.backward_coefficients)


# ---------------------------------------------------------------- indexing
@_jit
def offset(lin, sizes, strides):
    """Offset of C-order linear index ``lin`` over ``sizes`` with ``strides``."""
    off = 0
    for d in range(sizes.size - 1, -1, -1):
        q = lin // sizes[d]
        off += (lin - q * sizes[d]) * strides[d]
        lin = q
    return off


@_jit
def run_at(pos, end, rsz, rstr):
    """(offset, length) of the contiguous run starting at reduction index ``pos``."""
    inner = rsz[-1]
    o = pos // inner
    i = pos - o * inner
    return offset(o, rsz[:-1], rstr[:-1]) + i * rstr[-1], min(inner - i, end - pos)


# ------------------------------------------- reduction-inner range helpers
@_jit
def sums_about(x, xb, rsz, rstr, a, b, c):
    """``Σ(x − c)`` and ``Σ(x − c)²`` over reduction indices ``[a, b)``."""
    s1 = acc_zero(x)
    s2 = acc_zero(x)
    st = rstr[-1]
    pos = a
    while pos < b:
        off, m = run_at(pos, b, rsz, rstr)
        off += xb
        for i in range(m):
            v = load(x, off + i * st) - c
            s1 += v
            s2 += v * v
        pos += m
    return s1, s2


@_jit
def welford_range(x, xb, rsz, rstr, a, b):
    """Exact ``(mean, M2)`` (float64) of reduction indices ``[a, b)``."""
    n = 0.0
    mean = 0.0
    m2 = 0.0
    for blk in range(a, b, BLOCK):
        e = min(blk + BLOCK, b)
        nb = e - blk
        off, _ = run_at(blk, e, rsz, rstr)
        c = load(x, xb + off)
        s1, _ = sums_about(x, xb, rsz, rstr, blk, e, c)
        c = c + s1 / nb
        s1, s2 = sums_about(x, xb, rsz, rstr, blk, e, c)
        mb, m2b = shifted_moments(float(nb), float(c), float(s1), float(s2))
        n, mean, m2 = chan_merge(n, mean, m2, float(nb), mb, m2b)
    return mean, m2


@_jit
def dual_sums_range(dy, db, x, xb, rsz, rstr_dy, rstr_x, a, b, mu):
    """``(Σ dy, Σ dy·(x − mu))`` (float64) over reduction indices ``[a, b)``."""
    t1 = 0.0
    t2 = 0.0
    sd = rstr_dy[-1]
    sx = rstr_x[-1]
    inner = rsz[-1]
    for blk in range(a, b, BLOCK):
        e = min(blk + BLOCK, b)
        s1 = acc_zero(x)
        s2 = acc_zero(x)
        pos = blk
        while pos < e:
            o = pos // inner
            i = pos - o * inner
            m = min(inner - i, e - pos)
            od = db + offset(o, rsz[:-1], rstr_dy[:-1]) + i * sd
            ox = xb + offset(o, rsz[:-1], rstr_x[:-1]) + i * sx
            for j in range(m):
                g = load(dy, od + j * sd)
                s1 += g
                s2 += g * (load(x, ox + j * sx) - mu)
            pos += m
        t1 += s1
        t2 += s2
    return t1, t2


@_jit
def affine_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b, ca, cb, cc):
    """``out = u·ca + v·cb + cc`` (``v`` None: ``u·ca + cc``) over ``[a, b)``."""
    so = rstr_o[-1]
    su = rstr_u[-1]
    sv = rstr_v[-1]
    inner = rsz[-1]
    pos = a
    while pos < b:
        o = pos // inner
        i = pos - o * inner
        m = min(inner - i, b - pos)
        oo = ob + offset(o, rsz[:-1], rstr_o[:-1]) + i * so
        ou = ub + offset(o, rsz[:-1], rstr_u[:-1]) + i * su
        if v is None:
            for j in range(m):
                store(out, oo + j * so, load(u, ou + j * su) * ca + cc)
        else:
            ov = vb + offset(o, rsz[:-1], rstr_v[:-1]) + i * sv
            for j in range(m):
                store(out, oo + j * so, load(u, ou + j * su) * ca + load(v, ov + j * sv) * cb + cc)
        pos += m


# ------------------------------------------------ reduction-inner kernels
@_pjit
def moments_inner(x, p, chunk, n_chunks, part_mean, part_m2):
    """Chunk partials ``(mean, M2)`` into ``part_*[c, stat]``; ``p`` = plan arrays."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    n_stats = part_mean.shape[1]
    for item in prange(n_stats * n_chunks):
        k = item // n_chunks
        c = item - k * n_chunks
        a = c * chunk
        s = offset(k, ksz, kstat)
        xb = bases[0] + offset(k, ksz, kstr[0])
        part_mean[c, s], part_m2[c, s] = welford_range(x, xb, rsz, rstr[0], a, min(a + chunk, n))


@_pjit
def dual_sums_inner(dy, x, p, mean, chunk, n_chunks, part_s1, part_s2):
    """Chunk partials of ``Σ dy`` and ``Σ dy·(x − mean)``; operands (dy, x)."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    n_stats = part_s1.shape[1]
    for item in prange(n_stats * n_chunks):
        k = item // n_chunks
        c = item - k * n_chunks
        a = c * chunk
        s = offset(k, ksz, kstat)
        part_s1[c, s], part_s2[c, s] = dual_sums_range(
            dy, bases[0] + offset(k, ksz, kstr[0]), x, bases[1] + offset(k, ksz, kstr[1]),
            rsz, rstr[0], rstr[1], a, min(a + chunk, n), mean[s])


@_pjit
def affine_inner(out, u, v, p, chunk, n_chunks, ca, cb, cc):
    """``out = u·ca[s] + v·cb[s] + cc[s]`` (``v`` may be None); operands (out, u, v)."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    n_stats = ca.size
    for item in prange(n_stats * n_chunks):
        k = item // n_chunks
        c = item - k * n_chunks
        a = c * chunk
        s = offset(k, ksz, kstat)
        affine_range(out, bases[0] + offset(k, ksz, kstr[0]), u, bases[1] + offset(k, ksz, kstr[1]),
                     v, bases[2] + offset(k, ksz, kstr[2]), rsz, rstr[0], rstr[1], rstr[2],
                     a, min(a + chunk, n), ca[s], cb[s], cc[s])


@_pjit
def forward_fused_inner(x, out, p, weight, bias, eps, mean_out, var_out, invstd_out):
    """Training forward, one statistic per work item, its data still in cache
    for the normalization pass: one read of ``x`` from memory, one write."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    for k in prange(mean_out.size):
        s = offset(k, ksz, kstat)
        xb = bases[0] + offset(k, ksz, kstr[0])
        mean, m2 = welford_range(x, xb, rsz, rstr[0], 0, n)
        var = m2 / n
        invstd = invstd_of(var, eps)
        alpha, beta = forward_coefficients(mean, invstd, weight[s], bias[s])
        affine_range(out, bases[1] + offset(k, ksz, kstr[1]), x, xb, None, 0,
                     rsz, rstr[1], rstr[0], rstr[0], 0, n, alpha, 0.0, beta)
        mean_out[s] = mean
        var_out[s] = var
        invstd_out[s] = invstd


@_pjit
def backward_fused_inner(dy, x, out, p, mean, invstd, weight, training, dweight, dbias):
    """Backward, one statistic per work item: the reduction and the
    elementwise pass share one read of ``dy`` and ``x`` from memory."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    for k in prange(dweight.size):
        s = offset(k, ksz, kstat)
        db = bases[0] + offset(k, ksz, kstr[0])
        xb = bases[1] + offset(k, ksz, kstr[1])
        s1, s2 = dual_sums_range(dy, db, x, xb, rsz, rstr[0], rstr[1], 0, n, mean[s])
        ca, cb, cc = backward_coefficients(float(n), float(mean[s]), float(invstd[s]),
                                           float(weight[s]), s1, s2, training)
        affine_range(out, bases[2] + offset(k, ksz, kstr[2]), dy, db, x, xb,
                     rsz, rstr[2], rstr[0], rstr[1], 0, n, ca, cb, cc)
        dweight[s] = s2 * invstd[s]
        dbias[s] = s1


# ------------------------------------------------- kept-inner (channels-last)
@_jit
def _outer_item(item, n_tiles, n_chunks, ksz, tile):
    """(outer statistic, first inner statistic, tile width, chunk) of a work item."""
    c = item % n_chunks
    rest = item // n_chunks
    t = rest % n_tiles
    ko = rest // n_tiles
    j0 = t * tile
    return ko, j0, min(tile, ksz[-1] - j0), c


@_pjit
def moments_outer(x, p, tile, chunk, n_chunks, part_mean, part_m2):
    """Channels-last chunk partials ``(mean, M2)`` into ``part_*[c, stat]``."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    n_tiles = (ksz[-1] + tile - 1) // tile
    n_outer = part_mean.shape[1] // ksz[-1]
    sj = kstr[0][-1]
    ss = kstat[-1]
    for item in prange(n_outer * n_tiles * n_chunks):
        ko, j0, nt, c = _outer_item(item, n_tiles, n_chunks, ksz, tile)
        xb = bases[0] + offset(ko, ksz[:-1], kstr[0][:-1]) + j0 * sj
        sb = offset(ko, ksz[:-1], kstat[:-1]) + j0 * ss
        a = c * chunk
        b = min(a + chunk, n)
        zero = acc_zero(x)
        shift = np.full(nt, zero)
        s1 = np.full(nt, zero)
        s2 = np.full(nt, zero)
        mean = np.zeros(nt)
        m2 = np.zeros(nt)
        cnt = 0.0
        rows = max(1, BLOCK // nt)
        for blk in range(a, b, rows):
            e = min(blk + rows, b)
            nb = e - blk
            o0 = xb + offset(blk, rsz, rstr[0])
            for j in range(nt):
                shift[j] = load(x, o0 + j * sj)
                s1[j] = zero
            for r in range(blk, e):
                o = xb + offset(r, rsz, rstr[0])
                for j in range(nt):
                    s1[j] += load(x, o + j * sj) - shift[j]
            for j in range(nt):
                shift[j] += s1[j] / nb
                s1[j] = zero
                s2[j] = zero
            for r in range(blk, e):
                o = xb + offset(r, rsz, rstr[0])
                for j in range(nt):
                    v = load(x, o + j * sj) - shift[j]
                    s1[j] += v
                    s2[j] += v * v
            for j in range(nt):
                mb, m2b = shifted_moments(float(nb), float(shift[j]), float(s1[j]), float(s2[j]))
                _, mean[j], m2[j] = chan_merge(cnt, mean[j], m2[j], float(nb), mb, m2b)
            cnt += nb
        for j in range(nt):
            part_mean[c, sb + j * ss] = mean[j]
            part_m2[c, sb + j * ss] = m2[j]


@_pjit
def dual_sums_outer(dy, x, p, mu, tile, chunk, n_chunks, part_s1, part_s2):
    """Channels-last chunk partials of ``Σ dy`` and ``Σ dy·(x − mean)``."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    n_tiles = (ksz[-1] + tile - 1) // tile
    n_outer = part_s1.shape[1] // ksz[-1]
    sd = kstr[0][-1]
    sx = kstr[1][-1]
    ss = kstat[-1]
    for item in prange(n_outer * n_tiles * n_chunks):
        ko, j0, nt, c = _outer_item(item, n_tiles, n_chunks, ksz, tile)
        db = bases[0] + offset(ko, ksz[:-1], kstr[0][:-1]) + j0 * sd
        xb = bases[1] + offset(ko, ksz[:-1], kstr[1][:-1]) + j0 * sx
        sb = offset(ko, ksz[:-1], kstat[:-1]) + j0 * ss
        a = c * chunk
        b = min(a + chunk, n)
        zero = acc_zero(x)
        m = np.full(nt, zero)
        s1 = np.full(nt, zero)
        s2 = np.full(nt, zero)
        t1 = np.zeros(nt)
        t2 = np.zeros(nt)
        for j in range(nt):
            m[j] = mu[sb + j * ss]
        rows = max(1, BLOCK // nt)
        for blk in range(a, b, rows):
            e = min(blk + rows, b)
            for j in range(nt):
                s1[j] = zero
                s2[j] = zero
            for r in range(blk, e):
                od = db + offset(r, rsz, rstr[0])
                ox = xb + offset(r, rsz, rstr[1])
                for j in range(nt):
                    g = load(dy, od + j * sd)
                    s1[j] += g
                    s2[j] += g * (load(x, ox + j * sx) - m[j])
            for j in range(nt):
                t1[j] += s1[j]
                t2[j] += s2[j]
        for j in range(nt):
            part_s1[c, sb + j * ss] = t1[j]
            part_s2[c, sb + j * ss] = t2[j]


@_pjit
def affine_outer(out, u, v, p, tile, chunk, n_chunks, ca, cb, cc):
    """Channels-last ``out = u·ca[s] + v·cb[s] + cc[s]`` (``v`` may be None)."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = 1
    for s in rsz:
        n *= s
    n_tiles = (ksz[-1] + tile - 1) // tile
    n_outer = ca.size // ksz[-1]
    so = kstr[0][-1]
    su = kstr[1][-1]
    sv = kstr[2][-1]
    ss = kstat[-1]
    for item in prange(n_outer * n_tiles * n_chunks):
        ko, j0, nt, c = _outer_item(item, n_tiles, n_chunks, ksz, tile)
        ob = bases[0] + offset(ko, ksz[:-1], kstr[0][:-1]) + j0 * so
        ub = bases[1] + offset(ko, ksz[:-1], kstr[1][:-1]) + j0 * su
        vb = bases[2] + offset(ko, ksz[:-1], kstr[2][:-1]) + j0 * sv
        sb = offset(ko, ksz[:-1], kstat[:-1]) + j0 * ss
        a = c * chunk
        b = min(a + chunk, n)
        la = np.empty(nt)
        lb = np.empty(nt)
        lc = np.empty(nt)
        for j in range(nt):
            la[j] = ca[sb + j * ss]
            lb[j] = cb[sb + j * ss]
            lc[j] = cc[sb + j * ss]
        for r in range(a, b):
            oo = ob + offset(r, rsz, rstr[0])
            ou = ub + offset(r, rsz, rstr[1])
            if v is None:
                for j in range(nt):
                    store(out, oo + j * so, load(u, ou + j * su) * la[j] + lc[j])
            else:
                ov = vb + offset(r, rsz, rstr[2])
                for j in range(nt):
                    store(out, oo + j * so, load(u, ou + j * su) * la[j] + load(v, ov + j * sv) * lb[j] + lc[j])


# ------------------------------------------------------- chunk merging
@_pjit
def merge_moments(part_mean, part_m2, n, chunk, mean_out, m2_out):
    """Fold chunk partials in order: ``(mean, M2)`` per statistic (float64)."""
    n_chunks, n_stats = part_mean.shape
    for s in prange(n_stats):
        cnt = 0.0
        mean = 0.0
        m2 = 0.0
        for c in range(n_chunks):
            nb = float(min(n, (c + 1) * chunk) - c * chunk)
            cnt, mean, m2 = chan_merge(cnt, mean, m2, nb, part_mean[c, s], part_m2[c, s])
        mean_out[s] = mean
        m2_out[s] = m2


@_pjit
def merge_sums(part_s1, part_s2, s1_out, s2_out):
    """Sum chunk partials in order, per statistic (float64)."""
    n_chunks, n_stats = part_s1.shape
    for s in prange(n_stats):
        t1 = 0.0
        t2 = 0.0
        for c in range(n_chunks):
            t1 += part_s1[c, s]
            t2 += part_s2[c, s]
        s1_out[s] = t1
        s2_out[s] = t2
