"""Device functions and launch constants shared by the CUDA kernels.

Operand addressing: every full-size operand is a flat 1-D device view from
its lowest address, and element ``(k, r)`` of plan operand ``p``
(statistic ``k`` in plan order, reduction index ``r``) sits at

    bases[p] + offset(k, kept_sizes, kept_strides, p) + offset(r, red_sizes, red_strides, p)

(:class:`nbnorm._layout.Plan`); statistic ``k`` is stored at
``offset(k, kept_sizes, stat_strides, 0)`` of the C-ordered statistics.
Parameters that vary per element (layer norm's weight) and statistics read
per element (the parameter gradients) are operands too: flat vectors with
their own row of strides, 0 where they do not vary.
"""
from __future__ import annotations

from numba import config, cuda, float64

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
