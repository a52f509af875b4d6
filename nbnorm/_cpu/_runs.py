"""Indexing and the run/range helpers of the CPU kernels: sums, dual sums
and affine maps over one contiguous run (vectorized through windows with
literal offset 0 and stride 1) and over a range of reduction indices.
"""
from __future__ import annotations

import numpy as np

from numba.extending import overload

from ._access import acc_cast, acc_zero, load, maybe_window, store, plus_term, window
from ._jit import (_EXACT, BLOCK, _exact, _inline, _inline_exact, _jit, _strict, chan_merge,
                   shifted_moments)
from ._skipna import skip_nan, term_count
from ._memory import LINE, line_head, prefetch, store_fence, stream_line, streamable


# ---------------------------------------------------------------- indexing
@_jit
def _count(rsz):
    n = 1
    for s in rsz:
        n *= s
    return n


@_jit
def offset(lin, sizes, strides, nd):
    """Offset of C-order linear index ``lin`` over the first ``nd`` of ``sizes``
    with ``strides`` (no slicing: views would touch a shared refcount)."""
    off = 0
    for d in range(nd - 1, -1, -1):
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
    return offset(o, rsz, rstr, rsz.size - 1) + i * rstr[-1], min(inner - i, end - pos)


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
def prefetch_range(x, xb, rsz, rstr, a, b):
    """:func:`._memory.prefetch` every line of reduction indices ``[a, b)``
    (unit-stride runs only: strided ones touch a line per element)."""
    if rstr[-1] != 1:
        return
    step = max(LINE // x.itemsize, 1)
    pos = a
    while pos < b:
        off, m = run_at(pos, b, rsz, rstr)
        for q in range(0, m, step):
            prefetch(x, xb + off + q)
        prefetch(x, xb + off + m - 1)
        pos += m


@_jit
def block_end(pos, b, inner, span):
    """End of the block starting at reduction index ``pos`` (see
    :func:`block_span`): at a run boundary, or within one run, before ``b``."""
    if span >= inner:
        return min(((pos + span) // inner) * inner, b)
    return min(pos + span, (pos // inner + 1) * inner, b)


@_strict
def centred(v, c):
    """``v − c`` without fast-math flags: inside a reassociating sum LLVM
    could otherwise turn ``Σ(x − c)`` into ``Σx − n·c``, the cancellation
    that the shift exists to avoid."""
    return v - c


@_jit
def pivot_at(x, o, rsz, rstr, skipna):
    """The pivot of a statistic whose element ``r`` is at ``x[o + offset(r)]``
    (reduction sizes/strides ``rsz``/``rstr``): its first element in float64,
    or 0 if that is not finite (see ``finite_or_zero``); with ``skipna`` (not
    None) the first non-NaN one among the first ``BLOCK``."""
    if skipna is not None:
        for r in range(min(_count(rsz), BLOCK)):
            v = load(x, o + offset(r, rsz, rstr, rsz.size))
            if v == v:
                return float(finite_or_zero(x, v))
    return float(finite_or_zero(x, load(x, o)))


@_strict
def finite_or_zero(x, c):
    """A block's shift: its first value, or 0 if that is inf/NaN (an inf
    shift would turn every other value into NaN); ``x``'s accumulator type.
    Compiled without fast-math flags: inside a fast-math caller LLVM was
    seen to keep an infinite shift."""
    return acc_cast(x, c) if np.isfinite(c) else acc_cast(x, 0.0)


STREAM_RUN = 256    # shortest run written with streaming stores (4+ lines of float64)


# ------------------------------------------------------------- run math
# Each takes (array, offset, stride) per operand.  Call sites pass a window
# with literal offset 0 and stride 1 when every stride is 1: after inlining
# the loop is provably in bounds and unit-stride, and LLVM vectorizes it.
@_inline
def run_sums(x, o, s, m, c, skipna):
    """``Σ(x − c)``, ``Σ(x − c)²`` and the number of terms over ``x[o + i·s]``,
    ``i < m``; NaNs left out of all three unless ``skipna`` is None (then the
    count is ``m``)."""
    s0 = acc_zero(x)
    s1 = acc_zero(x)
    s2 = acc_zero(x)
    for i in range(m):
        v, s0 = skip_nan(skipna, x, centred(load(x, o + i * s), c), s0)
        s1 += v
        s2 += v * v
    return s1, s2, term_count(skipna, s0, m)


@_inline
def run_dual(dy, od, sd, x, ox, sx, m, mu):
    """``Σ dy`` and ``Σ dy·(x − mu)`` over a run."""
    s1 = acc_zero(x)
    s2 = acc_zero(x)
    for i in range(m):
        g = load(dy, od + i * sd)
        s1 += g
        s2 += g * centred(load(x, ox + i * sx), mu)
    return s1, s2


@_inline_exact
def run_affine(out, oo, so, u, ou, su, v, ov, sv, m, cu, ca, cv, cb, cc):
    """``out = (u − cu)·ca + ((v − cv)·cb + cc)`` over a run (float64
    arithmetic); without ``v`` (None) ``out = (u − cu)·ca + cc``."""
    for i in range(m):
        store(out, oo + i * so,
              (load(u, ou + i * su) - cu) * ca + plus_term(v, ov + i * sv, cv, cb, cc))


@_jit
def sums_at(x, o, s, m, c, skipna):
    if s == 1:
        return run_sums(window(x, o, m), 0, 1, m, c, skipna)
    return run_sums(x, o, s, m, c, skipna)


@_jit
def dual_at(dy, od, sd, x, ox, sx, m, mu):
    if sd == 1 and sx == 1:
        return run_dual(window(dy, od, m), 0, 1, window(x, ox, m), 0, 1, m, mu)
    return run_dual(dy, od, sd, x, ox, sx, m, mu)


def stream_run(out, oo, u, ou, v, ov, m, cu, ca, cv, cb, cc):
    """:func:`run_affine` over unit-stride windows, each whole 64-byte line of
    ``out`` written by one streaming store (:mod:`._memory`); bitwise the
    same values.  float16 outputs are written normally.  A work item that
    streams ends with :func:`store_fence`."""


@overload(stream_run, jit_options={"fastmath": _EXACT, "error_model": "numpy"})
def _stream_run(out, oo, u, ou, v, ov, m, cu, ca, cv, cb, cc):
    if not streamable(out, u, v):
        def plain(out, oo, u, ou, v, ov, m, cu, ca, cv, cb, cc):
            run_affine(window(out, oo, m), 0, 1, window(u, ou, m), 0, 1, maybe_window(v, ov, m),
                       0, 1, m, cu, ca, cv, cb, cc)
        return plain

    def lines(out, oo, u, ou, v, ov, m, cu, ca, cv, cb, cc):
        lanes = LINE // out.itemsize
        head = min(line_head(out, oo), m)
        run_affine(window(out, oo, head), 0, 1, window(u, ou, head), 0, 1,
                   maybe_window(v, ov, head), 0, 1, head, cu, ca, cv, cb, cc)
        j = head
        while j + lanes <= m:
            stream_line(out, oo + j, u, ou + j, v, ov + j, cu, ca, cv, cb, cc)
            j += lanes
        rest = m - j
        run_affine(window(out, oo + j, rest), 0, 1, window(u, ou + j, rest), 0, 1,
                   maybe_window(v, ov + j, rest), 0, 1, rest, cu, ca, cv, cb, cc)
    return lines


@_exact
def affine_at(out, oo, so, u, ou, su, v, ov, sv, m, cu, ca, cv, cb, cc, stream):
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` over a run (see
    :func:`run_affine`); unit-stride runs of ≥ ``STREAM_RUN`` elements with
    ``stream`` set are written by :func:`stream_run`."""
    if so == 1 and su == 1 and sv == 1:
        if stream and m >= STREAM_RUN:
            stream_run(out, oo, u, ou, v, ov, m, cu, ca, cv, cb, cc)
        else:
            run_affine(window(out, oo, m), 0, 1, window(u, ou, m), 0, 1, maybe_window(v, ov, m),
                       0, 1, m, cu, ca, cv, cb, cc)
    else:
        run_affine(out, oo, so, u, ou, su, v, ov, sv, m, cu, ca, cv, cb, cc)


# ------------------------------------------- reduction-inner range helpers
@_jit
def sums_about(x, xb, rsz, rstr, a, b, c, skipna):
    """``Σ(x − c)``, ``Σ(x − c)²`` and their number of terms over reduction
    indices ``[a, b)`` (NaNs left out unless ``skipna`` is None)."""
    s1 = acc_zero(x)
    s2 = acc_zero(x)
    n = 0
    pos = a
    while pos < b:
        off, m = run_at(pos, b, rsz, rstr)
        t1, t2, k = sums_at(x, xb + off, rstr[-1], m, c, skipna)
        s1 += t1
        s2 += t2
        n += k
        pos += m
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
def welford_range(x, xb, rsz, rstr, a, b, pivot, skipna):
    """Exact ``(n, mean − pivot, M2)`` (float64) of reduction indices ``[a, b)``,
    ``n`` the number of values that entered (NaNs left out unless ``skipna``
    is None; then ``n = b − a``).

    Per block (≤ ``BLOCK`` elements, see :func:`block_span`), sums about a
    shift ``c`` give the block's ``(n_b, mean_b, M2_b)``
    (:func:`shifted_moments`), merged by Chan in coordinates relative to
    ``pivot``; the next block is prefetched meanwhile.  After the first
    block ``c`` is the mean so far and one pass suffices when
    :func:`well_centred` says so (data whose mean does not wander);
    otherwise — the first block, a block far from the mean so far, a NaN or
    an inf — two passes from L1: a shifted sum gives the count and
    ``c + Σ(x − c)/n_b``, a second pass about that mean the corrected ``M2``.  The count is the first pass's: its shift
    is finite, so only NaNs are left out (the second shift is inf when the
    block holds an inf, and ``shifted_moments`` then ignores the sums).
    """
    n = 0.0
    mean = 0.0
    m2 = 0.0
    span = block_span(rsz)
    blk = a
    while blk < b:
        e = block_end(blk, b, rsz[-1], span)
        if e < b:
            prefetch_range(x, xb, rsz, rstr, e, block_end(e, b, rsz[-1], span))
        start = blk
        blk = e
        if n > 0:
            c, c_rel = shift_near(x, pivot, mean)
            s1, s2, nb = sums_about(x, xb, rsz, rstr, start, e, c, None)
            if well_centred(s1, s2, nb):
                mb, m2b = shifted_moments(float(nb), c_rel, float(s1), float(s2))
                n, mean, m2 = chan_merge(n, mean, m2, float(nb), mb, m2b)
                continue
        off, _ = run_at(start, e, rsz, rstr)
        c = finite_or_zero(x, load(x, xb + off))
        s1, _, nb = sums_about(x, xb, rsz, rstr, start, e, c, None)
        if skipna is not None and s1 != s1:   # a NaN in the block: count the others
            s1, _, nb = sums_about(x, xb, rsz, rstr, start, e, c, skipna)
        if nb == 0:     # every value NaN: the identity of the merge
            continue
        c = acc_cast(x, c + s1 / nb)
        if nb == e - start:   # no NaN in the block: the plain second pass
            s1, s2, _ = sums_about(x, xb, rsz, rstr, start, e, c, None)
        else:
            s1, s2, _ = sums_about(x, xb, rsz, rstr, start, e, c, skipna)
        mb, m2b = shifted_moments(float(nb), float(c) - pivot, float(s1), float(s2))
        n, mean, m2 = chan_merge(n, mean, m2, float(nb), mb, m2b)
    return n, mean, m2


@_jit
def dual_sums_range(dy, db, x, xb, rsz, rstr_dy, rstr_x, a, b, mu):
    """``(Σ dy, Σ dy·(x − mu))`` (float64) over reduction indices ``[a, b)``."""
    t1 = 0.0
    t2 = 0.0
    span = block_span(rsz)
    blk = a
    while blk < b:
        e = block_end(blk, b, rsz[-1], span)
        if e < b:
            after = block_end(e, b, rsz[-1], span)
            prefetch_range(dy, db, rsz, rstr_dy, e, after)
            prefetch_range(x, xb, rsz, rstr_x, e, after)
        s1 = acc_zero(x)
        s2 = acc_zero(x)
        pos = blk
        while pos < e:
            od, m = run_at(pos, e, rsz, rstr_dy)
            ox, _ = run_at(pos, e, rsz, rstr_x)
            u1, u2 = dual_at(dy, db + od, rstr_dy[-1], x, xb + ox, rstr_x[-1], m, mu)
            s1 += u1
            s2 += u2
            pos += m
        t1 += s1
        t2 += s2
        blk = e
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
    while pos < b:
        oo, m = run_at(pos, b, rsz, rstr_o)
        ou, _ = run_at(pos, b, rsz, rstr_u)
        ov, _ = run_at(pos, b, rsz, rstr_v)
        affine_at(out, ob + oo, rstr_o[-1], u, ub + ou, rstr_u[-1], v, vb + ov, rstr_v[-1],
                  m, cu, ca, cv, cb, cc, stream)
        if ahead >= 0:
            prefetch_range(u, ahead, rsz, rstr_u, pos, pos + m)
        pos += m
    if stream:
        store_fence()
