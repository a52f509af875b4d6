"""The CUDA passes over full-size operands: one kernel per operation, the
thread mapping a compile-time parameter.

``element_kernels(acc, inner_kept)`` builds them for an accumulator type
(float32 for float16/float32 storage, float64 for float64) and the plan's
``inner_kept`` (is the innermost, smallest-stride dimension kept?):

- innermost dimension reduced (NCHW over (0, 2, 3), rows of (N, D)): a work
  item is (statistic, chunk of its reduction range); ``width`` = G
  consecutive threads (1 ≤ G ≤ ``TPB``, a power of two) share one item and
  stride through it, so a warp reads contiguous memory;
- innermost dimension kept (channels-last, axis=0 of (N, D)): a block is
  ``width`` = TX adjacent statistics × TY = TPB/TX rows; a work item is
  (outer statistic, tile of TX statistics, chunk of rows).

Either way a thread walks reduction indices ``c·chunk + lane``, ``+ step``, …
of its item, carrying the innermost reduced index into the outer ones
(no division per element), and the members of an item merge across the
warp (shuffles; shared memory on the simulator) and the block.

Operations (statistic ``s``, reduction element ``e``, parameters ``w``/``b``
and per-element statistics ``mu``/``inv`` addressed by their own plan rows):

- ``welford``: partial ``(n, mean, M2)`` of ``x − pivot[s]`` per (statistic,
  chunk), ``ACC_N`` Welford accumulators per thread sharing ``1/count``;
  ``skipna`` leaves NaNs out;
- ``dual_sums``: partial ``(Σg, Σg·(x − mu)·[inv])`` with ``g = dy·[w]``;
- ``affine``: ``out = ((u − cu[s])·ca[s])·[w_e] + [b_e] + (v − cv[s])·cb[s] + cc[s]``.

Non-finite data follow NumPy's sums: a statistic holding ``+inf`` (and no
NaN or ``−inf``) gets mean ``+inf``; its M2, and everything of a statistic
holding a NaN, is NaN; once an accumulator's mean is non-finite it only
takes ``mean + x`` (``inf − inf`` would make it NaN).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64

from .device import (
    ACC_N,
    TPB,
    centred,
    chan_merge,
    offset,
    pivot_at,
    pivot_skipping,
    store_partial,
    sum_block_reduce,
    welford_block_reduce,
)


def element_kernels(acc, inner_kept):
    """``{"welford", "dual_sums", "affine"}`` for accumulator type ``acc`` and
    the thread mapping of ``inner_kept``.

    Common parameters: flat operand views; the plan arrays ``ks`` (kept
    sizes), ``ss`` (stat strides, (1, nk)), ``kst`` (kept strides, (nops, nk)),
    ``rs`` (reduced sizes), ``rst`` (reduced strides, (nops, nr)), ``bases``;
    operand rows ``p*``; ``n`` (reduction length); ``chunk``/``n_chunks``;
    ``width`` (G or TX) and ``n_tiles`` (tiles per outer statistic; 0 when
    the innermost dimension is reduced).
    """
    half = acc(0.5)
    inf = acc(math.inf)
    nan = acc(math.nan)

    @cuda.jit(device=True)
    def work_item(width, n_tiles, n_stats, n_chunks, kin):
        """``(k, c, lane, step, stride, active)``: this thread's statistic and
        chunk, its member index within the item, the reduction step, the
        thread distance between members, and whether the item exists."""
        tid = cuda.threadIdx.x
        if inner_kept:
            t = cuda.blockIdx.x // n_chunks
            ko = t // n_tiles
            kk = (t - ko * n_tiles) * width + tid % width
            return (ko * kin + kk, cuda.blockIdx.x % n_chunks, tid // width, TPB // width,
                    width, kk < kin)
        item = cuda.blockIdx.x * (TPB // width) + tid // width
        k = item // n_chunks
        return k, item - k * n_chunks, tid % width, width, 1, item < n_stats * n_chunks

    @cuda.jit(device=True)
    def welford_step(v, mu, m2, r):
        """One Welford update of ``(mean, M2)`` with ``v``, ``r = 1/count``."""
        d = v - mu
        if d - d == 0:
            mu += d * r
            return mu, m2 + d * (v - mu)
        if v - v == 0 and mu - mu == 0:
            # finite values whose difference overflows: halve, then scale back
            return mu + (v * half - mu * half) * (r + r), inf
        # an inf or NaN on either side: the mean goes as NumPy's sum
        return mu + v, nan

    @cuda.jit(device=True)
    def welford_add(v, cnt, mu, m2, u, r, skipna):
        """``v`` into accumulator ``u`` (``r = 1/count`` after it, shared by the
        round); with ``skipna`` a NaN is left out and the accumulator's own
        count gives the reciprocal."""
        if not skipna:
            mu[u], m2[u] = welford_step(v, mu[u], m2[u], r)
            cnt[u] += acc(1)
        elif v == v:
            cnt[u] += acc(1)
            mu[u], m2[u] = welford_step(v, mu[u], m2[u], acc(1) / cnt[u])

    @cuda.jit
    def welford(x, ks, ss, kst, rs, rst, bases, p, skipna, n, n_stats, chunk, n_chunks,
                width, n_tiles, part_count, part_mean, part_m2, pivots):
        """Partial ``(n, mean, M2)`` of ``x − pivot`` of each (statistic, chunk) →
        ``part_*[c, s]``; the pivot → ``pivots[s]``."""
        sh0 = cuda.shared.array(TPB, acc)
        sh1 = cuda.shared.array(TPB, acc)
        sh2 = cuda.shared.array(TPB, acc)
        cnt = cuda.local.array(ACC_N, acc)
        mu = cuda.local.array(ACC_N, acc)
        m2 = cuda.local.array(ACC_N, acc)
        for u in range(ACC_N):
            cnt[u] = acc(0)
            mu[u] = acc(0)
            m2[u] = acc(0)
        nk = ks.size
        nr = rs.size
        k, c, lane, step, stride, active = work_item(width, n_tiles, n_stats, n_chunks,
                                                     ks[nk - 1])
        pivot = 0.0
        if active:
            koff = bases[p] + offset(k, ks, kst, p, nk)
            if skipna:
                pivot = pivot_skipping(x, koff, rs, rst, p, nr, n)
            else:
                pivot = pivot_at(x, koff)
            shift = acc(pivot)
            end = min(c * chunk + chunk, n)
            inner = rs[nr - 1]
            sx = rst[p, nr - 1]
            pos = c * chunk + lane
            o = pos // inner
            i = pos - o * inner
            ox = offset(o, rs, rst, p, nr - 1)
            rounds = 0
            while pos < end:
                rounds += 1
                r = acc(1) / acc(rounds)
                for u in range(ACC_N):
                    if pos < end:
                        welford_add(acc(x[koff + ox + i * sx]) - shift, cnt, mu, m2, u, r,
                                    skipna)
                        pos += step
                        i += step
                        if i >= inner:
                            q = i // inner
                            o += q
                            i -= q * inner
                            ox = offset(o, rs, rst, p, nr - 1)
        tn, tm, tv = cnt[0], mu[0], m2[0]
        for u in range(1, ACC_N):
            tn, tm, tv = chan_merge(tn, tm, tv, cnt[u], mu[u], m2[u])
        tn, tm, tv = welford_block_reduce(tn, tm, tv, cuda.threadIdx.x, lane, stride, step,
                                          sh0, sh1, sh2)
        if active and lane == 0:
            store_partial(c, offset(k, ks, ss, 0, nk), n_stats, tn, tm, tv, pivot,
                          part_count, part_mean, part_m2, pivots)

    @cuda.jit
    def dual_sums(dy, x, w, mu, inv, ks, ss, kst, rs, rst, bases, pd, px, pw, pm, has_w,
                  scaled, n, n_stats, chunk, n_chunks, width, n_tiles, part_s1, part_s2):
        """Partial ``(Σg, Σg·(x − mu))`` (``scaled``: ``Σg·(x − mu)·inv``) with
        ``g = dy·w`` (``has_w``; else ``dy``) of each (statistic, chunk) →
        ``part_*[c, s]``; ``w`` by row ``pw``, ``mu``/``inv`` by row ``pm``."""
        sh0 = cuda.shared.array(TPB, acc)
        sh1 = cuda.shared.array(TPB, acc)
        sh2 = cuda.shared.array(TPB, acc)
        nk = ks.size
        nr = rs.size
        k, c, lane, step, stride, active = work_item(width, n_tiles, n_stats, n_chunks,
                                                     ks[nk - 1])
        s1 = acc(0)
        s2 = acc(0)
        s = 0
        if active:
            s = offset(k, ks, ss, 0, nk)
            end = min(c * chunk + chunk, n)
            kd = bases[pd] + offset(k, ks, kst, pd, nk)
            kx = bases[px] + offset(k, ks, kst, px, nk)
            kw = bases[pw] + offset(k, ks, kst, pw, nk)
            km = bases[pm] + offset(k, ks, kst, pm, nk)
            inner = rs[nr - 1]
            sd, sx, sw, sm = rst[pd, nr - 1], rst[px, nr - 1], rst[pw, nr - 1], rst[pm, nr - 1]
            pos = c * chunk + lane
            o = pos // inner
            i = pos - o * inner
            od, ox = offset(o, rs, rst, pd, nr - 1), offset(o, rs, rst, px, nr - 1)
            ow, om = offset(o, rs, rst, pw, nr - 1), offset(o, rs, rst, pm, nr - 1)
            while pos < end:
                g = acc(dy[kd + od + i * sd])
                if has_w:
                    g *= acc(w[kw + ow + i * sw])
                j = km + om + i * sm
                d = float64(x[kx + ox + i * sx]) - mu[j]
                if scaled:
                    d *= inv[j]
                s1 += g
                s2 += g * acc(d)
                pos += step
                i += step
                if i >= inner:
                    q = i // inner
                    o += q
                    i -= q * inner
                    od, ox = offset(o, rs, rst, pd, nr - 1), offset(o, rs, rst, px, nr - 1)
                    ow, om = offset(o, rs, rst, pw, nr - 1), offset(o, rs, rst, pm, nr - 1)
        s1, s2, _ = sum_block_reduce(s1, s2, acc(0), cuda.threadIdx.x, lane, stride, step,
                                     sh0, sh1, sh2)
        if active and lane == 0:
            part_s1[c * n_stats + s] = s1
            part_s2[c * n_stats + s] = s2

    @cuda.jit
    def affine(out, u, v, w, b, ks, ss, kst, rs, rst, bases, po, pu, pv, pw, has_cu, cu, ca,
               has_v, cv, cb, cc, has_w, n, n_stats, chunk, n_chunks, width, n_tiles):
        """``out = ((u − cu[s])·ca[s])·w + b + (v − cv[s])·cb[s] + cc[s]``; without
        ``cu`` the first term is ``u·ca[s]``, without ``v`` the ``v`` term is not
        evaluated, without ``w`` neither ``w`` nor ``b`` is read (row ``pw``)."""
        nk = ks.size
        nr = rs.size
        k, c, lane, step, _, active = work_item(width, n_tiles, n_stats, n_chunks, ks[nk - 1])
        if active:
            s = offset(k, ks, ss, 0, nk)
            a = ca[s]
            bc = cb[s] if has_v else a
            cst = cc[s]
            end = min(c * chunk + chunk, n)
            ko = bases[po] + offset(k, ks, kst, po, nk)
            ku = bases[pu] + offset(k, ks, kst, pu, nk)
            kv = bases[pv] + offset(k, ks, kst, pv, nk)
            kw = bases[pw] + offset(k, ks, kst, pw, nk)
            inner = rs[nr - 1]
            so, su, sv, sw = rst[po, nr - 1], rst[pu, nr - 1], rst[pv, nr - 1], rst[pw, nr - 1]
            pos = c * chunk + lane
            o = pos // inner
            i = pos - o * inner
            oo, ou = offset(o, rs, rst, po, nr - 1), offset(o, rs, rst, pu, nr - 1)
            ov, ow = offset(o, rs, rst, pv, nr - 1), offset(o, rs, rst, pw, nr - 1)
            while pos < end:
                if has_cu:
                    y = acc(centred(u[ku + ou + i * su], cu, s)) * a
                else:
                    y = acc(u[ku + ou + i * su]) * a
                if has_w:
                    j = kw + ow + i * sw
                    y = y * acc(w[j]) + acc(b[j])
                if has_v:
                    y += acc(centred(v[kv + ov + i * sv], cv, s)) * bc
                out[ko + oo + i * so] = y + cst
                pos += step
                i += step
                if i >= inner:
                    q = i // inner
                    o += q
                    i -= q * inner
                    oo, ou = offset(o, rs, rst, po, nr - 1), offset(o, rs, rst, pu, nr - 1)
                    ov, ow = offset(o, rs, rst, pv, nr - 1), offset(o, rs, rst, pw, nr - 1)

    return {"welford": welford, "dual_sums": dual_sums, "affine": affine}


#: ``ELEMENT[(accumulator dtype, inner_kept)][operation]``
ELEMENT = {(np.dtype(dt), kept): element_kernels(acc, kept)
           for dt, acc in ((np.float32, float32), (np.float64, float64))
           for kept in (False, True)}
