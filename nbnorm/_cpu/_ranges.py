"""Ranges of reduction indices, walked block by block: Welford statistics,
dual sums and the affine map over ``[a, b)`` of one statistic, the blocks
following its runs, the next block prefetched while one is summed.
"""
from __future__ import annotations

import numpy as np

from ._access import acc_cast, acc_zero, load
from numba import types
from numba.extending import overload

from ._jit import (_EXACT, BLOCK, _exact, _inline, _jit, _strict, chan_merge,
                   narrow_coefficients, shifted_moments)
from ._memory import LINE, prefetch, prefetch_l2, store_fence
from ._runs import affine_at, dual_at, finite_or_zero, run_after, run_at, run_cursor, sums_at


# ------------------------------------------------------------------ blocks
@_jit
def block_span(rsz):
    """Elements per block of a statistic whose runs are ``rsz[-1]`` long: as
    many whole runs as fit in ``BLOCK``, or a long run cut into equal pieces
    of ≤ ``BLOCK`` (blocks that cut runs at odd places cost a fifth more)."""
    inner = rsz[-1]
    if inner <= BLOCK:
        return (BLOCK // inner) * inner
    pieces = -(-inner // BLOCK)
    return -(-inner // pieces)


@_jit
def prefetch_range(x, xb, rsz, rstr, a, b, to_l2):
    """:func:`._memory.prefetch` (``to_l2``: :func:`._memory.prefetch_l2`) every
    line of reduction indices ``[a, b)`` (unit-stride runs only: strided ones
    touch a line per element)."""
    if rstr[-1] != 1:
        return
    step = max(LINE // x.itemsize, 1)
    pos = a
    if pos < b:
        base, r2, off, m = run_cursor(pos, b, rsz, rstr)
    while pos < b:
        for q in range(0, m, step):
            line_hint(x, xb + off + q, to_l2)
        line_hint(x, xb + off + m - 1, to_l2)
        pos += m
        if pos < b:
            base, r2, off, m = run_after(pos, b, rsz, rstr, base, r2)


@_inline
def line_hint(x, i, to_l2):
    if to_l2:
        prefetch_l2(x, i)
    else:
        prefetch(x, i)


@_jit
def block_end(pos, b, inner, span):
    """End of the block starting at reduction index ``pos`` (see
    :func:`block_span`): at a run boundary, or within one run, before ``b``."""
    if span >= inner:
        return min(((pos + span) // inner) * inner, b)
    return min(pos + span, (pos // inner + 1) * inner, b)


@_jit
def block_and_next(pos, b, rsz, span):
    """``(e, after)``: the block starting at ``pos`` is ``[pos, e)``, the next
    one ``[e, after)`` (empty at the end of the range)."""
    e = block_end(pos, b, rsz[-1], span)
    return e, block_end(e, b, rsz[-1], span) if e < b else e


# ------------------------------------------------------------------ ranges
@_jit
def sums_about(x, xb, rsz, rstr, a, b, c, skipna):
    """``Σ(x − c)``, ``Σ(x − c)²`` and their number of terms over reduction
    indices ``[a, b)`` (NaNs left out unless ``skipna`` is None)."""
    s1 = acc_zero(x)
    s2 = acc_zero(x)
    n = 0
    pos = a
    if pos < b:
        base, r2, off, m = run_cursor(pos, b, rsz, rstr)
    while pos < b:
        t1, t2, k = sums_at(x, xb + off, rstr[-1], m, c, skipna)
        s1 += t1
        s2 += t2
        n += k
        pos += m
        if pos < b:
            base, r2, off, m = run_after(pos, b, rsz, rstr, base, r2)
    return s1, s2, n


@_strict
def shift_near(x, pivot, mean):
    """``(c, c − pivot)``: the accumulator-type value ``c`` nearest
    ``pivot + mean`` and its exact offset from ``pivot``.  Without
    reassociation: in a fast-math caller LLVM folds ``(pivot + mean) − pivot``
    into ``mean``, which is not the offset of the rounded ``c``."""
    c = acc_cast(x, pivot + mean)
    return c, float(c) - pivot


@_jit
def well_centred(s1, s2, nb):
    """Whether sums ``s1 = Σ(x − c)``, ``s2 = Σ(x − c)²`` of ``nb`` values
    may give ``M2 = s2 − s1²/nb`` directly: both finite and
    ``s1²/nb ≤ s2/16``, i.e. ``c`` within ``std/√15`` of the values' mean, so
    that the subtraction cancels at most 1/16 of ``s2`` (about as accurate as
    the two-pass block, whose shift is the block's mean)."""
    return np.isfinite(s2) and float(s1) * float(s1) <= float(s2) * (nb / 16.0)


@_jit
def welford_block(x, xb, rsz, rstr, start, e, pivot, skipna, n, mean, m2):
    """The state ``(n, mean − pivot, M2)`` of the values so far merged with
    block ``[start, e)`` of reduction indices (see :func:`welford_range`).

    After the first block the shift ``c`` is the mean so far and one pass
    suffices when :func:`well_centred` says so (data whose mean does not
    wander); otherwise — the first block, a block far from the mean so far,
    a NaN or an inf — two passes from L1: a shifted sum gives the count and
    ``c + Σ(x − c)/n_b``, a second pass about that mean the corrected
    ``M2``.  The count is the first pass's: its shift is finite, so only
    NaNs are left out (the second shift is inf when the block holds an inf,
    and ``shifted_moments`` then ignores the sums)."""
    if n > 0:
        c, c_rel = shift_near(x, pivot, mean)
        s1, s2, nb = sums_about(x, xb, rsz, rstr, start, e, c, None)
        if well_centred(s1, s2, nb):
            mb, m2b = shifted_moments(float(nb), c_rel, float(s1), float(s2))
            return chan_merge(n, mean, m2, float(nb), mb, m2b)
    off, _ = run_at(start, e, rsz, rstr)
    c = finite_or_zero(x, load(x, xb + off))
    s1, _, nb = sums_about(x, xb, rsz, rstr, start, e, c, None)
    if skipna is not None and s1 != s1:   # a NaN in the block: count the others
        s1, _, nb = sums_about(x, xb, rsz, rstr, start, e, c, skipna)
    if nb == 0:     # every value NaN: the identity of the merge
        return n, mean, m2
    c = acc_cast(x, c + s1 / nb)
    if nb == e - start:   # no NaN in the block: the plain second pass
        s1, s2, _ = sums_about(x, xb, rsz, rstr, start, e, c, None)
    else:
        s1, s2, _ = sums_about(x, xb, rsz, rstr, start, e, c, skipna)
    mb, m2b = shifted_moments(float(nb), float(c) - pivot, float(s1), float(s2))
    return chan_merge(n, mean, m2, float(nb), mb, m2b)


@_strict
def run_moments(x, xb, n, pivot):
    """``(mean − pivot, M2)`` of a statistic that is one unit-stride run
    ``x[xb : xb + n]`` of ``n ≤ BLOCK`` values, ``pivot`` its
    :func:`pivot_at`: the steps of a first block (:func:`welford_block`:
    shift the first finite value, a shifted sum for the mean, a second
    pass about it, merged into the empty state) without the block walk,
    whose bookkeeping costs more than summing a short run (256 values:
    about 40 ns against 150 per statistic).  :func:`welford_range` takes
    such a range here too, so every path gives it the same bits.  Without
    fast-math flags: LLVM would fold ``(pivot + s1/nb) − pivot`` into
    ``s1/nb``, which is not the offset of the rounded shift."""
    c = finite_or_zero(x, load(x, xb))
    s1, _, nb = sums_at(x, xb, 1, n, c, None)
    c = acc_cast(x, c + s1 / nb)
    s1, s2, _ = sums_at(x, xb, 1, n, c, None)
    mb, m2b = shifted_moments(float(nb), float(c) - pivot, float(s1), float(s2))
    _, rel, m2 = chan_merge(0.0, 0.0, 0.0, float(nb), mb, m2b)
    return rel, m2


@_jit
def one_run(rsz, rstr):
    """Whether a statistic of reduction sizes ``rsz`` is one run of at most
    ``BLOCK`` values with unit stride in every operand (``rstr``: one row
    of strides per operand): then :func:`run_moments` and
    :func:`run_dual_sums` take it whole."""
    if rsz.size != 1 or rsz[0] > BLOCK:
        return False
    for r in range(rstr.shape[0]):
        if rstr[r, 0] != 1:
            return False
    return True


@_jit
def welford_range(x, xb, rsz, rstr, a, b, pivot, skipna):
    """Exact ``(n, mean − pivot, M2)`` (float64) of reduction indices ``[a, b)``,
    ``n`` the number of values that entered (NaNs left out unless ``skipna``
    is None; then ``n = b − a``).

    Per block (≤ ``BLOCK`` elements, see :func:`block_span`), sums about a
    shift give the block's ``(n_b, mean_b, M2_b)`` (:func:`shifted_moments`),
    merged by Chan in coordinates relative to ``pivot``
    (:func:`welford_block`); the next block is prefetched meanwhile.
    """
    if skipna is None and a == 0 and b <= BLOCK and rsz.size == 1 and rstr[0] == 1:
        mean, m2 = run_moments(x, xb, b, pivot)     # one run: one block
        return float(b), mean, m2
    n = 0.0
    mean = 0.0
    m2 = 0.0
    span = block_span(rsz)
    blk = a
    while blk < b:
        e, after = block_and_next(blk, b, rsz, span)
        prefetch_range(x, xb, rsz, rstr, e, after, False)
        n, mean, m2 = welford_block(x, xb, rsz, rstr, blk, e, pivot, skipna, n, mean, m2)
        blk = e
    return n, mean, m2


@_jit
def dual_sums_range(dy, db, x, xb, rsz, rstr_dy, rstr_x, a, b, mu):
    """``(Σ dy, Σ dy·(x − mu))`` (float64) over reduction indices ``[a, b)``."""
    if a == 0 and b <= BLOCK and rsz.size == 1 and rstr_dy[0] == 1 and rstr_x[0] == 1:
        return run_dual_sums(dy, db, x, xb, b, mu)     # one run: one block
    t1 = 0.0
    t2 = 0.0
    span = block_span(rsz)
    blk = a
    while blk < b:
        e, after = block_and_next(blk, b, rsz, span)
        prefetch_range(dy, db, rsz, rstr_dy, e, after, False)
        prefetch_range(x, xb, rsz, rstr_x, e, after, False)
        s1 = acc_zero(x)
        s2 = acc_zero(x)
        pos = blk
        bd, rd, od, m = run_cursor(pos, e, rsz, rstr_dy)
        bx, rx, ox, _ = run_cursor(pos, e, rsz, rstr_x)
        while pos < e:
            u1, u2 = dual_at(dy, db + od, rstr_dy[-1], x, xb + ox, rstr_x[-1], m, mu)
            s1 += u1
            s2 += u2
            pos += m
            if pos < e:
                bd, rd, od, m = run_after(pos, e, rsz, rstr_dy, bd, rd)
                bx, rx, ox, _ = run_after(pos, e, rsz, rstr_x, bx, rx)
        t1 += s1
        t2 += s2
        blk = e
    return t1, t2


@_jit
def run_dual_sums(dy, db, x, xb, n, mu):
    """:func:`dual_sums_range` of a statistic that is one unit-stride run of
    ``n ≤ BLOCK`` values in both operands (bitwise the same: one block)."""
    t1 = 0.0
    t2 = 0.0
    s1 = acc_zero(x)
    s2 = acc_zero(x)
    u1, u2 = dual_at(dy, db, 1, x, xb, 1, n, mu)
    s1 += u1
    s2 += u2
    t1 += s1
    t2 += s2
    return t1, t2


@_exact
def affine_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b, cu, ca, cv, cb, cc,
                 stream, ahead):
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` over reduction indices ``[a, b)``
    (``stream``: see :func:`affine_at`).  With ``ahead`` ≥ 0, the same indices
    of the statistic whose ``u`` starts there are prefetched run by run: the
    fused forward reads the next statistic from memory while it writes this
    one from cache (both must fit in L2)."""
    pos = a
    if pos < b:
        bo, ro, oo, m = run_cursor(pos, b, rsz, rstr_o)
        bu, ru, ou, _ = run_cursor(pos, b, rsz, rstr_u)
        bv, rv, ov, _ = run_cursor(pos, b, rsz, rstr_v)
    while pos < b:
        affine_at(out, ob + oo, rstr_o[-1], u, ub + ou, rstr_u[-1], v, vb + ov, rstr_v[-1],
                  m, cu, ca, cv, cb, cc, stream)
        if ahead >= 0:
            prefetch_range(u, ahead, rsz, rstr_u, pos, pos + m, True)
        pos += m
        if pos < b:
            bo, ro, oo, m = run_after(pos, b, rsz, rstr_o, bo, ro)
            bu, ru, ou, _ = run_after(pos, b, rsz, rstr_u, bu, ru)
            bv, rv, ov, _ = run_after(pos, b, rsz, rstr_v, bv, rv)
    if stream is not None:
        store_fence()


def map_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b, cu, ca, cv, cb, cc,
              stream, ahead):
    """:func:`affine_range` with float64 coefficients, computed in float32
    for float16/float32 storage where :func:`nbnorm._welford.narrow_coefficients`
    allows (decided per call, i.e. per statistic), else in float64."""


@overload(map_range, jit_options={"fastmath": _EXACT, "error_model": "numpy"})
def _map_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b, cu, ca, cv, cb, cc,
               stream, ahead):
    if u.dtype == types.float64:
        def wide(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b, cu, ca, cv, cb, cc,
                 stream, ahead):
            affine_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b,
                         cu, ca, cv, cb, cc, stream, ahead)
        return wide

    def narrow(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b, cu, ca, cv, cb, cc,
               stream, ahead):
        ok, u32, a32, v32, b32, c32 = narrow_coefficients(cu, ca, cv, cb, cc, v is not None)
        if ok:
            affine_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b,
                         u32, a32, v32, b32, c32, stream, ahead)
        else:
            affine_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b,
                         cu, ca, cv, cb, cc, stream, ahead)
    return narrow
