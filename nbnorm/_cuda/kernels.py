"""CUDA kernels over a :class:`nbnorm._layout.Plan`.

Every full-size operand is a flat 1-D device view starting at its lowest
address; element ``(k, r)`` of operand ``p`` (statistic ``k`` in plan order,
reduction index ``r``) sits at

    bases[p] + offset(k, kept_sizes, kept_strides[p]) + offset(r, red_sizes, red_strides[p])

and statistic ``k`` is stored at position ``offset(k, kept_sizes, stat_strides)``
of the C-ordered statistic vectors.  Two thread mappings, chosen by the
plan's innermost dimension:

- ``*_rows`` — innermost dimension reduced (NCHW over (0, 2, 3), rows of
  (N, D)).  A work item is (statistic, chunk of its reduction range); ``G``
  consecutive threads (1 ≤ G ≤ ``TPB``, a power of two) share one item and
  stride through it, so a warp reads contiguous memory.  Few long
  reductions get many chunks (many blocks per statistic); many short ones
  get one chunk and ``G`` down to a warp or less.
- ``*_cols`` — innermost dimension kept (channels-last, axis=0 of (N, D)).
  A block is ``TX`` adjacent statistics × ``TY`` rows (``TX·TY = TPB``); a
  work item is (outer statistic, tile of ``TX`` statistics, chunk of rows).

Reductions keep ``ACC_N`` independent Welford accumulators per thread
(sharing one reciprocal ``1/count`` per round), merge them and then merge
across the warp (shuffles; shared memory on the simulator) and across warps
(shared memory) with Chan's formula.  Per-chunk partials ``(n, mean, M2)``
land in ``(n_chunks, n_stats)`` arrays that ``finalize_welford`` merges in
float64.  The backward reduction does the same with plain sums
``(Σdy, Σdy·(x − mean))``.

Every Welford state and Chan merge is of ``d = x − p`` (accumulator type),
``p`` a pivot per statistic (:func:`pivot_at`), so Chan's ``δ = μ_b − μₐ``
carries errors of ``ulp(|mean − p|)``, not of ``ulp(|mean|)``, which
``δ²·nₐ·n_b/n`` would make an M2 error growing as ``(|mean|/std)²``;
``finalize_welford`` returns ``mean = p + mean(d)``.

Non-finite data follow NumPy's sums: a statistic holding ``+inf`` (and no
NaN or ``−inf``) gets mean ``+inf``; its M2, and everything of a statistic
holding a NaN, is NaN.  The per-element update ``mean += (x − mean)/n``
would turn ``inf`` into NaN at the next finite element (``inf − inf``), so
once an accumulator's mean is non-finite it only takes ``mean + x``.

The element pass is one map per statistic ``s``:

    out = (u − cu[s])·ca[s] + (v − cv[s])·cb[s] + cc[s]

with float64 centres ``cu``/``cv`` (:func:`centred`: the mean, or the pivot
and ``mean(d)``), so a constant channel gives exactly ``cc``, and
coefficients in the accumulator type.  Without ``v`` the second term is not
evaluated at all (no ``v·0``, which is NaN for ``v = ±inf``), and without
``cu`` the first is ``u·ca[s]``.

Element kernels are built per accumulator type by :func:`element_kernels`
(float32 for float16/float32 storage, float64 for float64).
"""
from __future__ import annotations

import inspect
import math

import numpy as np
from numba import config, cuda, float32, float64

from .. import _welford

SIM = bool(config.ENABLE_CUDASIM)
WARP = 32
TPB = 64 if SIM else 256       # threads per block (the simulator runs each thread in Python)
ACC_N = 4                      # independent Welford accumulators per thread
PIVOT_SCAN = 32                # elements searched for a finite pivot with skipna
FULL_MASK = 0xFFFFFFFF

chan_merge = cuda.jit(device=True)(_welford.chan_merge)
invstd_of = cuda.jit(device=True)(_welford.invstd_of)
forward_scale = cuda.jit(device=True)(_welford.forward_scale)
backward_coefficients = cuda.jit(device=True)(_welford.backward_coefficients)


@cuda.jit(device=True)
def sum_merge(a0, a1, a2, b0, b1, b2):
    """Merge two partial ``(Σ, Σ, Σ)`` triples."""
    return a0 + b0, a1 + b1, a2 + b2


@cuda.jit(device=True)
def pivot_at(x, at):
    """A statistic's pivot ``p``: ``x[at]``, its element at reduction index 0
    (every chunk of the statistic loads the same one), as float64; 0 if it is
    inf/NaN (``x − inf`` would be NaN for every ``x``).  ``x − p`` is exact
    whenever ``x`` is within a factor 2 of ``p``."""
    v = float64(x[at])
    return v if v - v == 0 else 0.0


@cuda.jit(device=True)
def pivot_skipping(x, at, rs, rst, p, nr, n):
    """With ``skipna``: the first finite value among a statistic's first
    ``PIVOT_SCAN`` elements (reduction indices 0, 1, …; the same for every
    chunk), 0 if there is none — a leading NaN would otherwise cost the
    pivot."""
    for r in range(min(n, PIVOT_SCAN)):
        v = float64(x[at + offset(r, rs, rst, p, nr)])
        if v - v == 0:
            return v
    return 0.0


@cuda.jit(device=True)
def centred(v, centre, s):
    """``v − mean`` of statistic ``s`` in float64 from a ``(1, n_stats)`` centre
    (the mean) or a ``(2, n_stats)`` one (``p``, ``mean(d)``): ``(v − p) − mean(d)``,
    which never rounds ``mean`` to ``ulp(|mean|)``."""
    d = float64(v) - centre[0, s]
    if centre.shape[0] > 1:
        d -= centre[1, s]
    return d


@cuda.jit(device=True)
def store_partial(c, s, n_stats, tn, tm, tv, pivot, part_count, part_mean, part_m2, pivots):
    """Chunk ``c``'s partial of statistic ``s`` → ``part_*[c·n_stats + s]``; chunk 0
    also stores the pivot the partials are relative to."""
    j = c * n_stats + s
    part_count[j] = tn
    part_mean[j] = tm
    part_m2[j] = tv
    if c == 0:
        pivots[s] = pivot


@cuda.jit(device=True)
def offset(lin, sizes, strides, p, nd):
    """Σ_d index_d·strides[p, d] for C-order linear index ``lin`` over ``sizes[:nd]``."""
    off = 0
    for d in range(nd - 1, -1, -1):
        sz = sizes[d]
        q = lin // sz
        off += (lin - q * sz) * strides[p, d]
        lin = q
    return off


@cuda.jit(device=True)
def cols_item(tid, TX, n_chunks, n_tiles, kin):
    """``(chunk, statistic in plan order, in range)`` of a channels-last thread:
    block = (outer statistic, tile of ``TX`` inner statistics, chunk of rows),
    thread column ``tid % TX`` within the tile."""
    t = cuda.blockIdx.x // n_chunks
    ko = t // n_tiles
    kk = (t - ko * n_tiles) * TX + tid % TX
    return cuda.blockIdx.x % n_chunks, ko * kin + kk, kk < kin


def _make_block_reduce(combine):
    """Block-level merge of ``(s0, s1, s2)`` triples with ``combine``."""

    @cuda.jit(device=True)
    def warp_reduce(s0, s1, s2, tid, ml, wspan, stride, sh0, sh1, sh2):
        """Merge ``wspan`` members of one warp, ``stride`` lanes apart; member
        ``ml`` (0 ≤ ml < wspan) at thread ``tid``; the result is valid at
        ``ml == 0``.  Called by every thread of the block."""
        if SIM:
            cuda.syncthreads()
            sh0[tid] = s0
            sh1[tid] = s1
            sh2[tid] = s2
            cuda.syncthreads()
            off = wspan // 2
            while off > 0:
                if ml < off:
                    t = tid + off * stride
                    s0, s1, s2 = combine(s0, s1, s2, sh0[t], sh1[t], sh2[t])
                    sh0[tid] = s0
                    sh1[tid] = s1
                    sh2[tid] = s2
                cuda.syncthreads()
                off //= 2
        else:
            off = wspan // 2
            while off > 0:
                delta = off * stride
                t0 = cuda.shfl_down_sync(FULL_MASK, s0, delta)
                t1 = cuda.shfl_down_sync(FULL_MASK, s1, delta)
                t2 = cuda.shfl_down_sync(FULL_MASK, s2, delta)
                s0, s1, s2 = combine(s0, s1, s2, t0, t1, t2)
                off //= 2
        return s0, s1, s2

    @cuda.jit(device=True)
    def block_reduce(s0, s1, s2, tid, m, stride, span, sh0, sh1, sh2):
        """Merge the ``span`` members ``tid = first + m·stride`` of a group
        (``span``, ``stride`` powers of two, ``stride ≤ 32``); the result is
        valid at ``m == 0``.  Called by every thread of the block."""
        wspan = span
        if stride * span > WARP:
            wspan = WARP // stride
        s0, s1, s2 = warp_reduce(s0, s1, s2, tid, m % wspan, wspan, stride, sh0, sh1, sh2)
        if span > wspan:
            cuda.syncthreads()
            if m % wspan == 0:
                sh0[tid] = s0
                sh1[tid] = s1
                sh2[tid] = s2
            cuda.syncthreads()
            if m == 0:
                for j in range(1, span // wspan):
                    t = tid + j * wspan * stride
                    s0, s1, s2 = combine(s0, s1, s2, sh0[t], sh1[t], sh2[t])
        return s0, s1, s2

    return block_reduce


welford_block_reduce = _make_block_reduce(chan_merge)
sum_block_reduce = _make_block_reduce(sum_merge)


def element_kernels(acc):
    """Kernels that touch full-size operands, accumulating in ``acc``.

    Common arguments: flat operand views; the plan arrays ``ks`` (kept sizes),
    ``ss`` (stat strides, shape (1, nk)), ``kst`` (kept strides, (nops, nk)),
    ``rs`` (reduced sizes), ``rst`` (reduced strides, (nops, nr)), ``bases``;
    operand rows ``p*``; ``n`` (reduction length); ``chunk``/``n_chunks``;
    rows kernels take ``G`` (threads per item), cols kernels ``TX`` (adjacent
    statistics per block) and ``n_tiles`` (tiles per outer statistic).
    """

    half = acc(0.5)
    inf = acc(math.inf)
    nan = acc(math.nan)

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
        # (inf + finite = inf, inf − inf = NaN, anything + NaN = NaN)
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

    @cuda.jit(device=True)
    def welford_init(cnt, mu, m2):
        """Empty the ``ACC_N`` per-thread Welford accumulators."""
        for u in range(ACC_N):
            cnt[u] = acc(0)
            mu[u] = acc(0)
            m2[u] = acc(0)

    @cuda.jit(device=True)
    def welford_finish(cnt, mu, m2):
        tn, tm, tv = cnt[0], mu[0], m2[0]
        for u in range(1, ACC_N):
            tn, tm, tv = chan_merge(tn, tm, tv, cnt[u], mu[u], m2[u])
        return tn, tm, tv

    @cuda.jit
    def welford_rows(x, ks, ss, kst, rs, rst, bases, p, skipna, n, n_stats, chunk, n_chunks,
                     G, part_count, part_mean, part_m2, pivots):
        """Partial ``(n, mean, M2)`` of ``x − pivot`` of each (statistic, chunk) →
        ``part_*[c, s]``; the pivot → ``pivots[s]``.  With ``skipna`` NaNs are left
        out (each accumulator then counts its own values)."""
        sh0 = cuda.shared.array(TPB, acc)
        sh1 = cuda.shared.array(TPB, acc)
        sh2 = cuda.shared.array(TPB, acc)
        cnt = cuda.local.array(ACC_N, acc)
        mu = cuda.local.array(ACC_N, acc)
        m2 = cuda.local.array(ACC_N, acc)
        welford_init(cnt, mu, m2)
        tid = cuda.threadIdx.x
        lane = tid % G
        item = cuda.blockIdx.x * (TPB // G) + tid // G
        nk = ks.size
        nr = rs.size
        active = item < n_stats * n_chunks
        k = 0
        c = 0
        pivot = 0.0
        if active:
            k = item // n_chunks
            c = item - k * n_chunks
            b = min(c * chunk + chunk, n)
            koff = bases[p] + offset(k, ks, kst, p, nk)
            if skipna:
                pivot = pivot_skipping(x, koff, rs, rst, p, nr, n)
            else:
                pivot = pivot_at(x, koff)
            shift = acc(pivot)
            inner = rs[nr - 1]
            sin = rst[p, nr - 1]
            pos = c * chunk + lane
            o = pos // inner
            i = pos - o * inner
            ooff = offset(o, rs, rst, p, nr - 1)
            rounds = 0
            while pos < b:
                rounds += 1
                r = acc(1) / acc(rounds)
                for u in range(ACC_N):
                    if pos < b:
                        welford_add(acc(x[koff + ooff + i * sin]) - shift, cnt, mu, m2, u, r,
                                    skipna)
                        pos += G
                        i += G
                        if i >= inner:
                            q = i // inner
                            o += q
                            i -= q * inner
                            ooff = offset(o, rs, rst, p, nr - 1)
        tn, tm, tv = welford_finish(cnt, mu, m2)
        tn, tm, tv = welford_block_reduce(tn, tm, tv, tid, lane, 1, G, sh0, sh1, sh2)
        if active and lane == 0:
            store_partial(c, offset(k, ks, ss, 0, nk), n_stats, tn, tm, tv, pivot,
                          part_count, part_mean, part_m2, pivots)

    @cuda.jit
    def welford_cols(x, ks, ss, kst, rs, rst, bases, p, skipna, n, n_stats, chunk, n_chunks,
                     TX, n_tiles, part_count, part_mean, part_m2, pivots):
        """Channels-last partial ``(n, mean, M2)`` of ``x − pivot`` → ``part_*[c, s]``;
        the pivot → ``pivots[s]``; ``skipna`` as in ``welford_rows``."""
        sh0 = cuda.shared.array(TPB, acc)
        sh1 = cuda.shared.array(TPB, acc)
        sh2 = cuda.shared.array(TPB, acc)
        cnt = cuda.local.array(ACC_N, acc)
        mu = cuda.local.array(ACC_N, acc)
        m2 = cuda.local.array(ACC_N, acc)
        welford_init(cnt, mu, m2)
        tid = cuda.threadIdx.x
        ty = tid // TX
        TY = TPB // TX
        nk = ks.size
        nr = rs.size
        c, k, active = cols_item(tid, TX, n_chunks, n_tiles, ks[nk - 1])
        pivot = 0.0
        if active:
            koff = bases[p] + offset(k, ks, kst, p, nk)
            if skipna:
                pivot = pivot_skipping(x, koff, rs, rst, p, nr, n)
            else:
                pivot = pivot_at(x, koff)
            shift = acc(pivot)
            b = min(c * chunk + chunk, n)
            r = c * chunk + ty
            rounds = 0
            while r < b:
                rounds += 1
                rc = acc(1) / acc(rounds)
                for u in range(ACC_N):
                    if r < b:
                        welford_add(acc(x[koff + offset(r, rs, rst, p, nr)]) - shift, cnt, mu,
                                    m2, u, rc, skipna)
                        r += TY
        tn, tm, tv = welford_finish(cnt, mu, m2)
        tn, tm, tv = welford_block_reduce(tn, tm, tv, tid, ty, TX, TY, sh0, sh1, sh2)
        if active and ty == 0:
            store_partial(c, offset(k, ks, ss, 0, nk), n_stats, tn, tm, tv, pivot,
                          part_count, part_mean, part_m2, pivots)

    @cuda.jit
    def dual_sums_rows(dy, x, ks, ss, kst, rs, rst, bases, pd, px, mu, n, n_stats, chunk,
                       n_chunks, G, part_s1, part_s2):
        """Partial ``(Σdy, Σdy·(x − mu))`` of each (statistic, chunk) → ``part_*[c, s]``."""
        sh0 = cuda.shared.array(TPB, acc)
        sh1 = cuda.shared.array(TPB, acc)
        sh2 = cuda.shared.array(TPB, acc)
        tid = cuda.threadIdx.x
        lane = tid % G
        item = cuda.blockIdx.x * (TPB // G) + tid // G
        nk = ks.size
        nr = rs.size
        active = item < n_stats * n_chunks
        s1 = acc(0)
        s2 = acc(0)
        c = 0
        s = 0
        if active:
            k = item // n_chunks
            c = item - k * n_chunks
            s = offset(k, ks, ss, 0, nk)
            m = mu[s]
            b = min(c * chunk + chunk, n)
            doff = bases[pd] + offset(k, ks, kst, pd, nk)
            xoff = bases[px] + offset(k, ks, kst, px, nk)
            inner = rs[nr - 1]
            sd = rst[pd, nr - 1]
            sx = rst[px, nr - 1]
            pos = c * chunk + lane
            o = pos // inner
            i = pos - o * inner
            od = offset(o, rs, rst, pd, nr - 1)
            ox = offset(o, rs, rst, px, nr - 1)
            while pos < b:
                g = acc(dy[doff + od + i * sd])
                s1 += g
                s2 += g * acc(float64(x[xoff + ox + i * sx]) - m)
                pos += G
                i += G
                if i >= inner:
                    q = i // inner
                    o += q
                    i -= q * inner
                    od = offset(o, rs, rst, pd, nr - 1)
                    ox = offset(o, rs, rst, px, nr - 1)
        s1, s2, _ = sum_block_reduce(s1, s2, acc(0), tid, lane, 1, G, sh0, sh1, sh2)
        if active and lane == 0:
            part_s1[c * n_stats + s] = s1
            part_s2[c * n_stats + s] = s2

    @cuda.jit
    def dual_sums_cols(dy, x, ks, ss, kst, rs, rst, bases, pd, px, mu, n, n_stats, chunk,
                       n_chunks, TX, n_tiles, part_s1, part_s2):
        """Channels-last partial ``(Σdy, Σdy·(x − mu))`` → ``part_*[c, s]``."""
        sh0 = cuda.shared.array(TPB, acc)
        sh1 = cuda.shared.array(TPB, acc)
        sh2 = cuda.shared.array(TPB, acc)
        tid = cuda.threadIdx.x
        ty = tid // TX
        TY = TPB // TX
        nk = ks.size
        nr = rs.size
        c, k, active = cols_item(tid, TX, n_chunks, n_tiles, ks[nk - 1])
        s1 = acc(0)
        s2 = acc(0)
        s = 0
        if active:
            s = offset(k, ks, ss, 0, nk)
            m = mu[s]
            doff = bases[pd] + offset(k, ks, kst, pd, nk)
            xoff = bases[px] + offset(k, ks, kst, px, nk)
            b = min(c * chunk + chunk, n)
            r = c * chunk + ty
            while r < b:
                g = acc(dy[doff + offset(r, rs, rst, pd, nr)])
                s1 += g
                s2 += g * acc(float64(x[xoff + offset(r, rs, rst, px, nr)]) - m)
                r += TY
        s1, s2, _ = sum_block_reduce(s1, s2, acc(0), tid, ty, TX, TY, sh0, sh1, sh2)
        if active and ty == 0:
            part_s1[c * n_stats + s] = s1
            part_s2[c * n_stats + s] = s2

    @cuda.jit
    def affine_rows(out, u, v, ks, ss, kst, rs, rst, bases, po, pu, pv, has_cu, cu, ca,
                    has_v, cv, cb, cc, n, n_stats, chunk, n_chunks, G):
        """``out = (u − cu[s])·ca[s] + (v − cv[s])·cb[s] + cc[s]``; without ``v``
        the ``v`` term is skipped, without ``cu`` the first term is ``u·ca[s]``."""
        tid = cuda.threadIdx.x
        lane = tid % G
        item = cuda.blockIdx.x * (TPB // G) + tid // G
        nk = ks.size
        nr = rs.size
        if item < n_stats * n_chunks:
            k = item // n_chunks
            c = item - k * n_chunks
            s = offset(k, ks, ss, 0, nk)
            a = ca[s]
            bc = cb[s] if has_v else a
            cst = cc[s]
            b = min(c * chunk + chunk, n)
            boff = bases[po] + offset(k, ks, kst, po, nk)
            buff = bases[pu] + offset(k, ks, kst, pu, nk)
            bvff = bases[pv] + offset(k, ks, kst, pv, nk)
            inner = rs[nr - 1]
            so = rst[po, nr - 1]
            su = rst[pu, nr - 1]
            sv = rst[pv, nr - 1]
            pos = c * chunk + lane
            o = pos // inner
            i = pos - o * inner
            oo = offset(o, rs, rst, po, nr - 1)
            ou = offset(o, rs, rst, pu, nr - 1)
            ov = offset(o, rs, rst, pv, nr - 1)
            while pos < b:
                if has_cu:
                    y = acc(centred(u[buff + ou + i * su], cu, s)) * a
                else:
                    y = acc(u[buff + ou + i * su]) * a
                if has_v:
                    y += acc(centred(v[bvff + ov + i * sv], cv, s)) * bc
                out[boff + oo + i * so] = y + cst
                pos += G
                i += G
                if i >= inner:
                    q = i // inner
                    o += q
                    i -= q * inner
                    oo = offset(o, rs, rst, po, nr - 1)
                    ou = offset(o, rs, rst, pu, nr - 1)
                    ov = offset(o, rs, rst, pv, nr - 1)

    @cuda.jit
    def affine_cols(out, u, v, ks, ss, kst, rs, rst, bases, po, pu, pv, has_cu, cu, ca,
                    has_v, cv, cb, cc, n, n_stats, chunk, n_chunks, TX, n_tiles):
        """Channels-last ``out = (u − cu[s])·ca[s] + (v − cv[s])·cb[s] + cc[s]``
        (the same optional terms as ``affine_rows``)."""
        tid = cuda.threadIdx.x
        ty = tid // TX
        TY = TPB // TX
        nk = ks.size
        nr = rs.size
        c, k, active = cols_item(tid, TX, n_chunks, n_tiles, ks[nk - 1])
        if active:
            s = offset(k, ks, ss, 0, nk)
            a = ca[s]
            bc = cb[s] if has_v else a
            cst = cc[s]
            boff = bases[po] + offset(k, ks, kst, po, nk)
            buff = bases[pu] + offset(k, ks, kst, pu, nk)
            bvff = bases[pv] + offset(k, ks, kst, pv, nk)
            b = min(c * chunk + chunk, n)
            r = c * chunk + ty
            while r < b:
                if has_cu:
                    y = acc(centred(u[buff + offset(r, rs, rst, pu, nr)], cu, s)) * a
                else:
                    y = acc(u[buff + offset(r, rs, rst, pu, nr)]) * a
                if has_v:
                    y += acc(centred(v[bvff + offset(r, rs, rst, pv, nr)], cv, s)) * bc
                out[boff + offset(r, rs, rst, po, nr)] = y + cst
                r += TY

    return {
        "welford_rows": welford_rows, "welford_cols": welford_cols,
        "dual_sums_rows": dual_sums_rows, "dual_sums_cols": dual_sums_cols,
        "affine_rows": affine_rows, "affine_cols": affine_cols,
    }


ELEMENT = {np.dtype(np.float32): element_kernels(float32),
           np.dtype(np.float64): element_kernels(float64)}


# ------------------------------------------------------ per-statistic kernels
@cuda.jit
def finalize_welford(part_count, part_mean, part_m2, pivots, n_chunks, n_stats, inv_dof,
                     training, eps, w, has_w, bias, has_b, mean_out, var_out, invstd_out, centre,
                     alpha, beta):
    """Chan-merge the ``n_chunks`` partials of each statistic in float64.

    The partials are of ``d = x − pivots[s]``: ``mean = pivots[s] + mean(d)``,
    ``var = M2·inv_dof``; with ``training``: ``invstd = 1/√(var + eps)`` and
    the coefficients of ``y = (x − mean)·α + β``: ``centre`` (flat ``(2, n_stats)``)
    holds the pivot and ``mean(d)`` for ``x − mean = (x − pivots) − mean(d)``,
    ``α = weight·invstd``, ``β = bias`` (weight/bias 1/0 when absent).
    """
    s = cuda.grid(1)
    if s >= n_stats:
        return
    cn = 0.0
    cm = 0.0
    cv = 0.0
    for c in range(n_chunks):
        j = c * n_stats + s
        cn, cm, cv = chan_merge(cn, cm, cv, float64(part_count[j]), float64(part_mean[j]),
                                float64(part_m2[j]))
    var = cv * inv_dof
    mean_out[s] = pivots[s] + cm
    var_out[s] = var
    if training:
        inv = invstd_of(var, eps)
        wt = w[s] if has_w else 1.0
        invstd_out[s] = inv
        centre[s] = pivots[s]
        centre[n_stats + s] = cm
        alpha[s] = forward_scale(inv, wt)
        beta[s] = bias[s] if has_b else 0.0


@cuda.jit
def finalize_sums(part_s1, part_s2, n_chunks, n_stats, n, inv, w, has_w, training, dweight, dbias,
                  ca, cb, cc):
    """Sum the partials of ``(Σdy, Σdy·(x − mean))`` in float64; write
    ``dbias = Σdy``, ``dweight = Σdy·(x − mean)·invstd`` and the ``(a, b, c)``
    of ``dx = dy·a + (x − mean)·b + c`` (see ``_welford.backward_coefficients``)."""
    s = cuda.grid(1)
    if s >= n_stats:
        return
    t1 = 0.0
    t2 = 0.0
    for c in range(n_chunks):
        t1 += float64(part_s1[c * n_stats + s])
        t2 += float64(part_s2[c * n_stats + s])
    wt = w[s] if has_w else 1.0
    a, b, c3 = backward_coefficients(float64(n), inv[s], wt, t1, t2, training)
    dbias[s] = t1
    dweight[s] = t2 * inv[s]
    ca[s] = a
    cb[s] = b
    cc[s] = c3


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
def gather(src, base, sizes, strides, out):
    """``out[i] = src[base + offset(i, sizes, strides)]`` (C order, converting)."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = src[base + offset(i, sizes, strides, 0, sizes.size)]


@cuda.jit
def update_running(run, base, sizes, strides, batch, momentum, scale, skipped):
    """``run ← (1 − momentum)·run + momentum·scale·batch`` where finite; counts the rest."""
    i = cuda.grid(1)
    if i >= batch.size:
        return
    b = float64(batch[i]) * scale
    if b - b == 0.0:
        j = base + offset(i, sizes, strides, 0, sizes.size)
        run[j] = (1.0 - momentum) * float64(run[j]) + momentum * b
    else:
        cuda.atomic.add(skipped, 0, 1)


# ------------------------------------------------------------ kernel listing
_STORE = ("float16", "float32", "float64")
_ACC = {"float16": "float32", "float32": "float32", "float64": "float64"}
_PLAN = "int64[::1], int64[:, ::1], int64[:, ::1], int64[::1], int64[:, ::1], int64[::1]"

#: the type of each parameter name of the element kernels (``T`` storage,
#: ``A`` accumulator): one name, one meaning, in every element kernel
ELEMENT_TYPES = {
    **dict.fromkeys(("x", "dy", "out", "u", "v"), "{T}[::1]"),
    **dict.fromkeys(("ks", "rs", "bases"), "int64[::1]"),
    **dict.fromkeys(("ss", "kst", "rst"), "int64[:, ::1]"),
    **dict.fromkeys(("p", "pd", "px", "po", "pu", "pv", "n", "n_stats", "chunk", "n_chunks",
                     "G", "TX", "n_tiles"), "int64"),
    **dict.fromkeys(("skipna", "has_cu", "has_v"), "boolean"),
    **dict.fromkeys(("cu", "cv"), "float64[:, ::1]"),
    **dict.fromkeys(("mu", "pivots"), "float64[::1]"),
    **dict.fromkeys(("ca", "cb", "cc", "part_count", "part_mean", "part_m2", "part_s1",
                     "part_s2"), "{A}[::1]"),
}


def element_signature(kernel, storage, acc):
    """The signature string of an element kernel for ``storage``/``acc``
    dtypes, from its parameter names (:data:`ELEMENT_TYPES`)."""
    names = inspect.signature(getattr(kernel, "py_func", kernel)).parameters
    return "void(" + ", ".join(ELEMENT_TYPES[p].format(T=storage, A=acc) for p in names) + ")"
_PARAM = ("float64[::1], boolean")


def kernel_signatures():
    """Every kernel with every signature the backend launches it with:
    a list of ``(name, python function, [signature strings])``.

    ``T`` is the storage dtype (float16/32/64), ``A`` its accumulator type
    (float32/float32/float64); scalar ints are int64, floats float64.
    """
    out = []
    el = {}
    for t in _STORE:
        a = _ACC[t]
        el.setdefault(a, []).append(t)
    for a, stores in el.items():
        for name, kernel in ELEMENT[np.dtype(a)].items():
            out.append((f"{name}[{a}]", kernel,
                        [element_signature(kernel, t, a) for t in stores]))
    # statistics are stored in the accumulator type (float32 or float64)
    # statistics in the accumulator type, and float64 ones for Moments states
    out.append(("finalize_welford", finalize_welford, [
        f"void({a}[::1], {a}[::1], {a}[::1], float64[::1], int64, int64, float64, boolean, "
        f"float64, {_PARAM}, {_PARAM}, {s}[::1], {s}[::1], {s}[::1], float64[::1], {s}[::1], "
        f"{s}[::1])"
        for a, s in (("float32", "float32"), ("float64", "float64"), ("float32", "float64"))]))
    out.append(("finalize_sums", finalize_sums, [
        f"void({a}[::1], {a}[::1], int64, int64, int64, float64[::1], {_PARAM}, "
        f"boolean, {a}[::1], {a}[::1], {a}[::1], {a}[::1], {a}[::1])"
        for a in ("float32", "float64")]))
    out.append(("inference_coefficients", inference_coefficients, [
        f"void(float64[::1], {_PARAM}, {_PARAM}, float64, {a}[::1], {a}[::1])"
        for a in ("float32", "float64")]))
    out.append(("gather", gather, [
        f"void({t}[::1], int64, int64[::1], int64[:, ::1], float64[::1])"
        for t in _STORE + ("int32", "int64", "uint8", "boolean")]))
    out.append(("update_running", update_running, [
        f"void({t}[::1], int64, int64[::1], int64[:, ::1], {b}[::1], float64, float64, "
        f"int64[::1])" for t in _STORE for b in ("float32", "float64")]))
    return out
