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
Means are carried relative to one *pivot* per statistic, its first element
(:func:`pivot_at`): a block mean near 10⁸ rounded to float64 is off by
~ulp(10⁸), and Chan's ``δ²·nₐn_b/n`` would square that error into ``M2``;
relative to the pivot the means are small and keep their digits.
Chunk partials land in ``(n_chunks, n_stats)`` arrays merged by
``merge_moments`` / ``merge_sums``; chunking depends only on the shape, so
results do not depend on the thread count.

NaN-skipping statistics (``skipna``) are a compile-time specialization of
the same reductions (:mod:`._skipna`): the kernels take a chunk-count array
``part_count`` that is None (every element counts; the loops compile to
the plain sums) or an array (NaNs are left out of every block's sums and
counted), so a block's ``(n, mean, M2)`` is that of its non-NaN values and
a block or chunk with none is the identity of Chan's merge (``n_b = 0``).
Infinite values are not skipped: ``np.nanmean``/``np.nanvar`` give
``±inf``/NaN for them, and so do the merges.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import _welford
from ._threads import kernel
from ._access import acc_cast, acc_zero, load, maybe_window, store, vterm, window
from ._skipna import column_count, count_columns, skip_nan, skip_nan_at, term_count

BLOCK = 4096    # elements per Welford block (16 KiB of float32: stays in L1)
TILE = 512      # adjacent statistics per channels-last work item
GROUP_ROWS = 64 # terms a channels-last column sums in float32 before a float64 fold
SUPER_ROW = 128 # elements read as one vector when narrow channels-last rows lie back to back
ROWS_BLOCK = 8 * BLOCK  # elements per channels-last block: one pass each, so it
                        # may outgrow L1, and the scalar per-column merge is rare

# Reductions along a run may be reassociated (that is what lets LLVM
# vectorize a sum; ``centred`` keeps the shift exact inside them); elementwise
# code and per-column (channels-last) accumulations vectorize without it and
# may only contract to FMAs: with reassociation LLVM would rewrite
# (x − mean)·α as x·α − mean·α and lose every digit when |mean| ≫ std.
# Neither set assumes away NaN or inf.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_EXACT = {"contract"}
_jit = njit(cache=True, fastmath=_FAST, error_model="numpy")
_exact = njit(cache=True, fastmath=_EXACT, error_model="numpy")
# run/row bodies are inlined at each call site so that LLVM sees the literal
# offset 0 and stride 1 of the contiguous call and vectorizes that copy
_inline = njit(cache=True, fastmath=_FAST, error_model="numpy", inline="always")
_inline_exact = njit(cache=True, fastmath=_EXACT, error_model="numpy", inline="always")
# parallel kernels come in a parallel and a serial build (see ``_threads``);
# prange indices are cast to int64: uint64 parfor indices would turn index
# arithmetic into float64
_pjit = kernel(cache=True, fastmath=_FAST, error_model="numpy")
_pjit_exact = kernel(cache=True, fastmath=_EXACT, error_model="numpy")
# A callee compiled without its own fastmath option inherits its caller's
# flags, so the merge formulas state theirs: none at all.
_strict = njit(cache=True, fastmath=False, error_model="numpy")

chan_merge = _strict(_welford.chan_merge)
shifted_moments = _strict(_welford.shifted_moments)
merge_state = _strict(_welford.merge_states)
two_sum = _strict(_welford.two_sum)
invstd_of = _strict(_welford.invstd_of)
forward_scale = _strict(_welford.forward_scale)
backward_coefficients = _strict(_welford.backward_coefficients)


@_strict
def exact_ratio(a, b):
    """``a / b`` correctly rounded (the fast-math flags of a caller would let
    LLVM turn it into ``a·(1/b)``)."""
    return a / b


@_strict
def invstd_vector(var, eps):
    """``1/√(var + eps)`` per statistic with the scalar formula the fused
    kernel uses, so fused and unfused passes agree to the last bit."""
    out = np.empty_like(var)
    for i in range(var.size):
        out[i] = invstd_of(var[i], eps)
    return out


# ---------------------------------------------------------------- indexing
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
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` over a run (float64
    arithmetic); without ``v`` (None) the second term is absent."""
    for i in range(m):
        store(out, oo + i * so, (load(u, ou + i * su) - cu) * ca + vterm(v, ov + i * sv, cv, cb) + cc)


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


@_exact
def affine_at(out, oo, so, u, ou, su, v, ov, sv, m, cu, ca, cv, cb, cc):
    if so == 1 and su == 1 and sv == 1:
        run_affine(window(out, oo, m), 0, 1, window(u, ou, m), 0, 1, maybe_window(v, ov, m), 0, 1,
                   m, cu, ca, cv, cb, cc)
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


@_jit
def welford_range(x, xb, rsz, rstr, a, b, pivot, skipna):
    """Exact ``(n, mean − pivot, M2)`` (float64) of reduction indices ``[a, b)``,
    ``n`` the number of values that entered (NaNs left out unless ``skipna``
    is None; then ``n = b − a``).

    Per block of ≤ ``BLOCK`` elements: a shifted sum gives the block's count
    ``n_b`` and mean ``c + Σ(x − c)/n_b``, a second pass (from L1) about
    that mean the corrected ``M2``; blocks merge by Chan in coordinates
    relative to ``pivot``.  The count is the first pass's: its shift is
    finite, so only NaNs are left out (the second shift is inf when the
    block holds an inf, and ``shifted_moments`` then ignores the sums).
    """
    n = 0.0
    mean = 0.0
    m2 = 0.0
    for blk in range(a, b, BLOCK):
        e = min(blk + BLOCK, b)
        off, _ = run_at(blk, e, rsz, rstr)
        c = finite_or_zero(x, load(x, xb + off))
        s1, _, nb = sums_about(x, xb, rsz, rstr, blk, e, c, None)
        if skipna is not None and s1 != s1:   # a NaN in the block: count the others
            s1, _, nb = sums_about(x, xb, rsz, rstr, blk, e, c, skipna)
        if nb == 0:     # every value NaN: the identity of the merge
            continue
        c = acc_cast(x, c + s1 / nb)
        if nb == e - blk:   # no NaN in the block: the plain second pass
            s1, s2, _ = sums_about(x, xb, rsz, rstr, blk, e, c, None)
        else:
            s1, s2, _ = sums_about(x, xb, rsz, rstr, blk, e, c, skipna)
        mb, m2b = shifted_moments(float(nb), float(c) - pivot, float(s1), float(s2))
        n, mean, m2 = chan_merge(n, mean, m2, float(nb), mb, m2b)
    return n, mean, m2


@_jit
def dual_sums_range(dy, db, x, xb, rsz, rstr_dy, rstr_x, a, b, mu):
    """``(Σ dy, Σ dy·(x − mu))`` (float64) over reduction indices ``[a, b)``."""
    t1 = 0.0
    t2 = 0.0
    for blk in range(a, b, BLOCK):
        e = min(blk + BLOCK, b)
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
    return t1, t2


@_exact
def affine_range(out, ob, u, ub, v, vb, rsz, rstr_o, rstr_u, rstr_v, a, b, cu, ca, cv, cb, cc):
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` over reduction indices ``[a, b)``."""
    pos = a
    while pos < b:
        oo, m = run_at(pos, b, rsz, rstr_o)
        ou, _ = run_at(pos, b, rsz, rstr_u)
        ov, _ = run_at(pos, b, rsz, rstr_v)
        affine_at(out, ob + oo, rstr_o[-1], u, ub + ou, rstr_u[-1], v, vb + ov, rstr_v[-1],
                  m, cu, ca, cv, cb, cc)
        pos += m


# ------------------------------------------------ reduction-inner kernels
@_jit
def _count(rsz):
    n = 1
    for s in rsz:
        n *= s
    return n


@_jit
def _inner_item(i_, n_chunks, chunk, n, ksz, kstat):
    """(statistic in plan order, its position in the statistic arrays, chunk,
    reduction range [a, b)) of a reduction-inner work item."""
    item = np.int64(i_)
    k = item // n_chunks
    c = item - k * n_chunks
    a = c * chunk
    return k, offset(k, ksz, kstat, ksz.size), c, a, min(a + chunk, n)


@_pjit
def moments_inner(x, p, chunk, n_chunks, part_count, part_mean, part_m2, pivots):
    """Chunk partials ``(mean − pivot, M2)`` into ``part_*[c, stat]`` and the
    pivots into ``pivots[stat]``; ``p`` = plan arrays.  ``part_count``: None,
    or the chunks' counts of non-NaN values (NaNs are then left out)."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    n_stats = part_mean.shape[1]
    for i_ in prange(n_stats * n_chunks):
        k, s, c, a, b = _inner_item(i_, n_chunks, chunk, n, ksz, kstat)
        xb = bases[0] + offset(k, ksz, kstr[0], ksz.size)
        pivot = pivot_at(x, xb, rsz, rstr[0], part_count)
        nc, part_mean[c, s], part_m2[c, s] = welford_range(x, xb, rsz, rstr[0], a, b, pivot,
                                                           part_count)
        if part_count is not None:
            part_count[c, s] = nc
        if c == 0:
            pivots[s] = pivot


@_pjit
def dual_sums_inner(dy, x, p, mean, chunk, n_chunks, part_s1, part_s2):
    """Chunk partials of ``Σ dy`` and ``Σ dy·(x − mean)``; operands (dy, x)."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    n_stats = part_s1.shape[1]
    for i_ in prange(n_stats * n_chunks):
        k, s, c, a, b = _inner_item(i_, n_chunks, chunk, n, ksz, kstat)
        part_s1[c, s], part_s2[c, s] = dual_sums_range(
            dy, bases[0] + offset(k, ksz, kstr[0], ksz.size), x, bases[1] + offset(k, ksz, kstr[1], ksz.size),
            rsz, rstr[0], rstr[1], a, b, mean[s])


@_pjit
def forward_fused_inner(x, out, p, weight, bias, eps, mean_out, var_out, invstd_out):
    """Training forward, one statistic per work item, its data still in cache
    for the normalization pass: one read of ``x`` from memory, one write."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    for i_ in prange(mean_out.size):
        k = np.int64(i_)
        s = offset(k, ksz, kstat, ksz.size)
        xb = bases[0] + offset(k, ksz, kstr[0], ksz.size)
        pivot = pivot_at(x, xb, rsz, rstr[0], None)
        _, mean, m2 = welford_range(x, xb, rsz, rstr[0], 0, n, pivot, None)
        mean += pivot
        var = exact_ratio(m2, float(n))
        invstd = invstd_of(var, eps)
        affine_range(out, bases[1] + offset(k, ksz, kstr[1], ksz.size), x, xb, None, 0,
                     rsz, rstr[1], rstr[0], rstr[0], 0, n,
                     mean, forward_scale(invstd, weight[s]), 0.0, 0.0, bias[s])
        mean_out[s] = mean
        var_out[s] = var
        invstd_out[s] = invstd


@_pjit
def backward_fused_inner(dy, x, x_dx, out, p, mean, invstd, weight, training, dweight, dbias):
    """Backward, one statistic per work item: the reduction and the
    elementwise pass share one read of ``dy`` and ``x`` from memory.
    ``x_dx`` is ``x`` in training and None with frozen statistics."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    n = _count(rsz)
    for i_ in prange(dweight.size):
        k = np.int64(i_)
        s = offset(k, ksz, kstat, ksz.size)
        db = bases[0] + offset(k, ksz, kstr[0], ksz.size)
        xb = bases[1] + offset(k, ksz, kstr[1], ksz.size)
        s1, s2 = dual_sums_range(dy, db, x, xb, rsz, rstr[0], rstr[1], 0, n, mean[s])
        ca, cb, cc = backward_coefficients(float(n), float(invstd[s]), float(weight[s]),
                                           s1, s2, training)
        affine_range(out, bases[2] + offset(k, ksz, kstr[2], ksz.size), dy, db, x_dx, xb,
                     rsz, rstr[2], rstr[0], rstr[1], 0, n, 0.0, ca, float(mean[s]), cb, cc)
        dweight[s] = s2 * invstd[s]
        dbias[s] = s1


# ------------------------------------------------- kept-inner (channels-last)
@_jit
def _super_rows(nt, adjacent):
    """Rows ``q`` read as one vector of ``q·nt`` columns: a narrow tile whose
    rows lie back to back in memory (``adjacent``) is read ``q`` rows at a
    time, column ``p`` of the vector standing for statistic ``p mod nt``, so
    the per-row loop overhead is paid once per ``SUPER_ROW`` elements."""
    return max(1, SUPER_ROW // nt) if adjacent else 1


@_jit
def _group_rows(nt, q):
    """Rows summed per accumulator group of a ``nt``-column tile read ``q``
    rows at a time: each accumulator sums at most ``GROUP_ROWS`` terms (the
    rounding of a float32 sum grows with its length) and a group spans at
    most ``BLOCK·q`` elements."""
    return max(1, min(GROUP_ROWS, BLOCK // (nt * q))) * q


@_exact
def tile_columns(a, nt):
    """Repeat ``a[:nt]`` over the whole of ``a`` (``a[p] = a[p mod nt]``)."""
    for p in range(nt, a.size):
        a[p] = a[p - nt]


@_exact
def fold_columns(t, s, nt):
    """``t[j] += s[r·nt + j]`` for ``r = 0 … q−1``: the ``q`` copies of each
    column, in order (a vector add per copy)."""
    for r in range(s.size // nt):
        for j in range(nt):
            t[j] += s[r * nt + j]


@_jit
def _outer_item(i_, n_tiles, n_chunks, ksz, tile):
    """(outer statistic, first inner statistic, tile width, chunk) of a work item."""
    item = np.int64(i_)
    c = item % n_chunks
    rest = item // n_chunks
    t = rest % n_tiles
    ko = rest // n_tiles
    j0 = t * tile
    return ko, j0, min(tile, ksz[-1] - j0), c


@_inline_exact
def row_shifted(s0, s1, s2, x, o, s, shift):
    """``s1 += x − shift`` and ``s2 += (x − shift)²`` along a row; unless
    ``s0`` is None, NaNs are left out and ``s0`` counts the other terms."""
    for j in range(s1.size):
        v = skip_nan_at(s0, j, x, load(x, o + j * s) - shift[j])
        s1[j] += v
        s2[j] += v * v


@_inline_exact
def row_dual(s1, s2, dy, od, sd, x, ox, sx, mu):
    """``s1 += dy``, ``s2 += dy·(x − mu)`` along a row."""
    for j in range(s1.size):
        g = load(dy, od + j * sd)
        s1[j] += g
        s2[j] += g * (load(x, ox + j * sx) - mu[j])


@_inline_exact
def row_affine(out, oo, so, u, ou, su, v, ov, sv, m, cs, css, cu, ca, cv, cb, cc):
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` along a run whose elements
    belong to statistics ``cs + j·css`` (coefficients per element)."""
    for j in range(m):
        k = cs + j * css
        store(out, oo + j * so,
              (load(u, ou + j * su) - cu[k]) * ca[k] + vterm(v, ov + j * sv, cv[k], cb[k]) + cc[k])


@_exact
def rows_affine(out, oo, so, ro, u, ou, su, ru, v, ov, sv, rv, m, nr, cs, css, rs,
                cu, ca, cv, cb, cc):
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` over ``nr`` runs of ``m``
    elements; run ``r`` starts at ``oo + r·ro`` (``ou + r·ru``, ``ov + r·rv``)
    and its element ``j`` belongs to statistic ``cs + r·rs + j·css``."""
    if css == 0:
        for r in range(nr):
            k = cs + r * rs
            affine_at(out, oo + r * ro, so, u, ou + r * ru, su, v, ov + r * rv, sv, m,
                      cu[k], ca[k], cv[k], cb[k], cc[k])
    elif so == 1 and su == 1 and sv == 1 and css == 1:
        for r in range(nr):
            k = cs + r * rs
            row_affine(window(out, oo + r * ro, m), 0, 1, window(u, ou + r * ru, m), 0, 1,
                       maybe_window(v, ov + r * rv, m), 0, 1, m, 0, 1,
                       window(cu, k, m), window(ca, k, m), window(cv, k, m),
                       window(cb, k, m), window(cc, k, m))
    else:
        for r in range(nr):
            row_affine(out, oo + r * ro, so, u, ou + r * ru, su, v, ov + r * rv, sv, m,
                       cs + r * rs, css, cu, ca, cv, cb, cc)


@_exact
def rows_shifted(t0, t1, t2, s0, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q):
    """``t1 += Σ(x − shift)`` and ``t2 += Σ(x − shift)²`` (float64 columns)
    over the rows ``[a, b)``; unless ``s0`` (and ``t0``) is None, NaNs are
    left out and ``t0 +=`` the number of the other terms.  Groups of
    ``rows`` rows are summed in the accumulator type of ``x`` into ``s0``,
    ``s1``, ``s2`` (a vector add per row, or per ``q`` adjacent rows: they
    and ``shift`` hold ``q·nt`` columns, see :func:`_super_rows`) and then
    folded in; rows are walked run by run, so no division is spent per
    row."""
    nt = t1.size
    w = q * nt
    step = rstr[-1]
    for blk in range(a, b, rows):
        e = min(blk + rows, b)
        if s0 is not None:
            s0[:] = 0.0
        s1[:] = 0.0
        s2[:] = 0.0
        pos = blk
        while pos < e:
            off, m = run_at(pos, e, rsz, rstr)
            o = xb + off
            r = 0
            while r + q <= m and q > 1:
                row_shifted(s0, s1, s2, window(x, o + r * nt, w), 0, 1, shift)
                r += q
            u0 = maybe_window(s0, 0, nt)
            u1 = window(s1, 0, nt)
            u2 = window(s2, 0, nt)
            if sj == 1:
                for r in range(r, m):
                    row_shifted(u0, u1, u2, window(x, o + r * step, nt), 0, 1, shift)
            else:
                for r in range(r, m):
                    row_shifted(u0, u1, u2, x, o + r * step, sj, shift)
            pos += m
        if s0 is not None:
            fold_columns(t0, s0, nt)
        fold_columns(t1, s1, nt)
        fold_columns(t2, s2, nt)


@_pjit
def moments_outer(x, p, tile, chunk, n_chunks, part_count, part_mean, part_m2, pivots):
    """Channels-last chunk partials ``(mean − pivot, M2)`` into ``part_*[c, stat]``
    and the pivots (each column's first row) into ``pivots[stat]``;
    ``part_count``: None, or the chunks' counts of non-NaN values (NaNs are
    then left out, and each column's block count is its own).

    Blocks of ``ROWS_BLOCK // tile`` rows, summed about a per-column shift: the
    running mean of the blocks before (the first row for the first block).
    The corrected ``M2 = Σ(x − c)² − (Σ(x − c))²/n`` is exact while the shift
    is within a few standard deviations of the block mean; a block where any
    column is further off (drifting or adversarial data) is summed again
    about its own mean, so one pass suffices for stationary data without
    giving up exactness for the rest.  Within a block, groups of
    ``_group_rows(tile)`` rows accumulate in ``x``'s accumulator type
    (float32 for 16/32-bit data: twice the lanes of float64) before a
    float64 fold.
    """
    ksz, kstat, kstr, rsz, rstr, bases = p
    r0 = rstr[0]
    k0 = kstr[0]
    n = _count(rsz)
    n_tiles = (ksz[-1] + tile - 1) // tile
    n_outer = part_mean.shape[1] // ksz[-1]
    sj = k0[-1]
    ss = kstat[-1]
    for i_ in prange(n_outer * n_tiles * n_chunks):
        ko, j0, nt, c = _outer_item(i_, n_tiles, n_chunks, ksz, tile)
        xb = bases[0] + offset(ko, ksz, k0, ksz.size - 1) + j0 * sj
        sb = offset(ko, ksz, kstat, ksz.size - 1) + j0 * ss
        a = c * chunk
        b = min(a + chunk, n)
        q = _super_rows(nt, sj == 1 and r0[-1] == nt)
        zero = acc_zero(x)
        shift = np.full(q * nt, zero)
        s0 = count_columns(part_count, q * nt, zero)
        s1 = np.full(q * nt, zero)
        s2 = np.full(q * nt, zero)
        t0 = count_columns(part_count, nt, 0.0)
        t1 = np.zeros(nt)      # float64 columns: long blocks stay exact
        t2 = np.zeros(nt)
        pivot = np.empty(nt)
        for j in range(nt):
            pivot[j] = pivot_at(x, xb + j * sj, rsz, r0, part_count)
        cnt = np.zeros(nt)
        mean = np.zeros(nt)
        m2 = np.zeros(nt)
        rows = max(1, ROWS_BLOCK // nt)
        group = _group_rows(nt, q)
        o0 = xb + offset(a, rsz, r0, rsz.size)
        for j in range(nt):
            shift[j] = finite_or_zero(x, load(x, o0 + j * sj))
        tile_columns(shift, nt)
        for blk in range(a, b, rows):
            e = min(blk + rows, b)
            nb = e - blk
            block_sums(t0, t1, t2, s0, s1, s2, x, xb, rsz, r0, blk, e, sj, shift, group, q)
            if not shift_near_mean(t0, t1, t2, nb):
                for j in range(nt):
                    shift[j] = finite_or_zero(x, shift[j] + t1[j] / column_count(t0, j, nb))
                tile_columns(shift, nt)
                block_sums(t0, t1, t2, s0, s1, s2, x, xb, rsz, r0, blk, e, sj, shift, group, q)
            for j in range(nt):
                n_j = float(column_count(t0, j, nb))
                mb, m2b = shifted_moments(n_j, float(shift[j]) - pivot[j], t1[j], t2[j])
                cnt[j], mean[j], m2[j] = chan_merge(cnt[j], mean[j], m2[j], n_j, mb, m2b)
                shift[j] = finite_or_zero(x, pivot[j] + mean[j])
            tile_columns(shift, nt)
        for j in range(nt):
            if part_count is not None:
                part_count[c, sb + j * ss] = cnt[j]
            part_mean[c, sb + j * ss] = mean[j]
            part_m2[c, sb + j * ss] = m2[j]
            if c == 0:
                pivots[sb + j * ss] = pivot[j]


@_jit
def block_sums(t0, t1, t2, s0, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q):
    """:func:`rows_shifted` into zeroed ``t0`` (unless None), ``t1``, ``t2``.

    NaNs are looked for only where they are: the plain sums first, and when
    counting (``t0`` not None) the block again with NaN skipping only if a
    column's sum came out NaN; otherwise every column counts ``b − a``."""
    t1[:] = 0.0
    t2[:] = 0.0
    rows_shifted(None, t1, t2, None, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q)
    if t0 is not None:
        t0[:] = b - a
        if np.isnan(t1).any():
            t0[:] = 0.0
            t1[:] = 0.0
            t2[:] = 0.0
            rows_shifted(t0, t1, t2, s0, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q)


@_jit
def shift_near_mean(t0, t1, t2, nb):
    """True when every column's shift is within 4 standard deviations of its
    block mean: ``d² ≤ 16·(t2/n − d²)`` with ``d = t1/n``, ``n`` its count
    (:func:`column_count`) (NaN → False; a column without values has
    nothing to be exact about)."""
    for j in range(t1.size):
        n = column_count(t0, j, nb)
        d = t1[j] / n
        if n > 0 and not d * d <= 16.0 * (t2[j] / n - d * d):
            return False
    return True


@_exact
def rows_dual(t1, t2, s1, s2, dy, db, rstr_dy, sd, x, xb, rstr_x, sx, rsz, a, b, mu, rows, q):
    """``t1 += Σ dy`` and ``t2 += Σ dy·(x − mu)`` (float64 columns) over the
    rows ``[a, b)``, grouped and read as :func:`rows_shifted` does."""
    nt = t1.size
    w = q * nt
    step_dy = rstr_dy[-1]
    step_x = rstr_x[-1]
    for blk in range(a, b, rows):
        e = min(blk + rows, b)
        s1[:] = 0.0
        s2[:] = 0.0
        pos = blk
        while pos < e:
            od, m = run_at(pos, e, rsz, rstr_dy)
            ox, _ = run_at(pos, e, rsz, rstr_x)
            od += db
            ox += xb
            r = 0
            while r + q <= m and q > 1:
                row_dual(s1, s2, window(dy, od + r * nt, w), 0, 1, window(x, ox + r * nt, w), 0, 1, mu)
                r += q
            u1 = window(s1, 0, nt)
            u2 = window(s2, 0, nt)
            if sd == 1 and sx == 1:
                for r in range(r, m):
                    row_dual(u1, u2, window(dy, od + r * step_dy, nt), 0, 1,
                             window(x, ox + r * step_x, nt), 0, 1, mu)
            else:
                for r in range(r, m):
                    row_dual(u1, u2, dy, od + r * step_dy, sd, x, ox + r * step_x, sx, mu)
            pos += m
        fold_columns(t1, s1, nt)
        fold_columns(t2, s2, nt)


@_pjit
def dual_sums_outer(dy, x, p, mu, tile, chunk, n_chunks, part_s1, part_s2):
    """Channels-last chunk partials of ``Σ dy`` and ``Σ dy·(x − mean)``."""
    ksz, kstat, kstr, rsz, rstr, bases = p
    r0 = rstr[0]
    r1 = rstr[1]
    n = _count(rsz)
    n_tiles = (ksz[-1] + tile - 1) // tile
    n_outer = part_s1.shape[1] // ksz[-1]
    sd = kstr[0][-1]
    sx = kstr[1][-1]
    ss = kstat[-1]
    for i_ in prange(n_outer * n_tiles * n_chunks):
        ko, j0, nt, c = _outer_item(i_, n_tiles, n_chunks, ksz, tile)
        db = bases[0] + offset(ko, ksz, kstr[0], ksz.size - 1) + j0 * sd
        xb = bases[1] + offset(ko, ksz, kstr[1], ksz.size - 1) + j0 * sx
        sb = offset(ko, ksz, kstat, ksz.size - 1) + j0 * ss
        a = c * chunk
        b = min(a + chunk, n)
        q = _super_rows(nt, sd == 1 and sx == 1 and r0[-1] == nt and r1[-1] == nt)
        w = q * nt
        zero = acc_zero(x)
        m = np.full(w, zero)
        s1 = np.full(w, zero)
        s2 = np.full(w, zero)
        t1 = np.zeros(nt)
        t2 = np.zeros(nt)
        for j in range(nt):
            m[j] = mu[sb + j * ss]
        tile_columns(m, nt)
        rows_dual(t1, t2, s1, s2, dy, db, r0, sd, x, xb, r1, sx, rsz, a, b, m,
                  _group_rows(nt, q), q)
        for j in range(nt):
            part_s1[c, sb + j * ss] = t1[j]
            part_s2[c, sb + j * ss] = t2[j]


# ----------------------------------------------------------- elementwise
@_exact
def tile_coefficients(tiles, s, inner, cu, ca, cv, cb, cc):
    """Row ``k`` of ``tiles`` = coefficient ``k`` of statistics ``s … s+inner−1``, repeated."""
    for j in range(inner):
        tiles[0, j] = cu[s + j]
        tiles[1, j] = ca[s + j]
        tiles[2, j] = cv[s + j]
        tiles[3, j] = cb[s + j]
        tiles[4, j] = cc[s + j]
    for k in range(5):
        tile_columns(tiles[k], inner)


@_pjit_exact
def affine(out, u, v, dims, chunk, n_chunks, cu, ca, cv, cb, cc):
    """``out = (u − cu[s])·ca[s] + (v − cv[s])·cb[s] + cc[s]`` for every
    element, ``s`` its statistic (``v`` may be None); operands (out, u, v).

    ``dims`` = (sizes, stat strides, strides, bases) of every dimension in memory
    order, so each work item streams a contiguous stretch of memory (fresh
    output pages are touched in order).  Runs of the innermost dimension get
    one coefficient set when it is reduced, per-element ones when it is kept;
    runs between two carries of the odometer go to :func:`rows_affine` in
    one call.
    """
    sizes, sstr, st, bases = dims
    st0 = st[0]
    st1 = st[1]
    st2 = st[2]
    nd = sizes.size
    inner = sizes[nd - 1]
    total = _count(sizes)
    ss = sstr[nd - 1]
    so = st0[nd - 1]
    su = st1[nd - 1]
    sv = st2[nd - 1]
    n2 = sizes[nd - 2] if nd >= 2 else 1   # runs between two carries of the odometer
    d2 = max(nd - 2, 0)
    ro = st0[d2]
    ru = st1[d2]
    rv = st2[d2]
    rs = sstr[d2]
    # narrow kept rows lying back to back: q of them at a time (see _super_rows)
    # with coefficients tiled q times, rebuilt at each carry, hence long runs only
    q = _super_rows(inner, nd >= 2 and ss == 1 and rs == 0 and so == 1 and su == 1 and sv == 1
                    and ro == inner and ru == inner and rv == inner)
    if n2 < 16 * q:
        q = 1
    w = q * inner
    for i_ in prange(n_chunks):
        pos = np.int64(i_) * chunk
        b = min(pos + chunk, total)
        o = pos // inner
        i = pos - o * inner
        r2 = o % n2
        s = offset(o, sizes, sstr, nd - 1)
        oo = bases[0] + offset(o, sizes, st0, nd - 1)
        ou = bases[1] + offset(o, sizes, st1, nd - 1)
        ov = bases[2] + offset(o, sizes, st2, nd - 1)
        tiles = np.empty((5, w if q > 1 else 0))
        tiled = -1
        while pos < b:
            m = min(inner - i, b - pos)
            nr = 1
            if m == inner:  # whole runs up to the next carry or the chunk's end
                nr = min(n2 - r2, (b - pos) // inner)
            done = 0
            if q > 1 and nr >= q:
                if tiled != s:
                    tile_coefficients(tiles, s, inner, cu, ca, cv, cb, cc)
                    tiled = s
                done = nr - nr % q
                rows_affine(out, oo, 1, w, u, ou, 1, w, v, ov, 1, w, w, done // q, 0, 1, 0,
                            tiles[0], tiles[1], tiles[2], tiles[3], tiles[4])
            rows_affine(out, oo + i * so + done * ro, so, ro, u, ou + i * su + done * ru, su, ru,
                        v, ov + i * sv + done * rv, sv, rv, m, nr - done, s + i * ss, ss, rs,
                        cu, ca, cv, cb, cc)
            pos += nr * m
            o += nr
            i = 0
            r2 += nr
            if r2 == n2:  # carry past the second-innermost dim: recompute
                r2 = 0
                s = offset(o, sizes, sstr, nd - 1)
                oo = bases[0] + offset(o, sizes, st0, nd - 1)
                ou = bases[1] + offset(o, sizes, st1, nd - 1)
                ov = bases[2] + offset(o, sizes, st2, nd - 1)
            else:
                s += nr * rs
                oo += nr * ro
                ou += nr * ru
                ov += nr * rv


@_pjit_exact
def touch_pages(buf, page):
    """Write one byte per ``page`` bytes of a fresh buffer, in parallel and in
    memory order: the first-touch page faults of a new output then cost a
    fraction of what they cost when a kernel touches it in its own order."""
    for i_ in prange((buf.size + page - 1) // page):
        buf[np.int64(i_) * page] = 0


# ------------------------------------------------------- chunk merging
@_pjit
def merge_moments(part_count, part_mean, part_m2, n, chunk, mean_out, m2_out):
    """Fold chunk partials in order: ``(mean, M2)`` per statistic (float64).
    A chunk counts ``part_count[c, stat]`` values, or (``part_count`` None)
    all of its ``min(n, (c + 1)·chunk) − c·chunk``; one with none is the
    identity of the merge."""
    n_chunks, n_stats = part_mean.shape
    for i_ in prange(n_stats):
        s = np.int64(i_)
        cnt = 0.0
        mean = 0.0
        m2 = 0.0
        for c in range(n_chunks):
            if part_count is None:
                nb = float(min(n, (c + 1) * chunk) - c * chunk)
            else:
                nb = part_count[c, s]
            cnt, mean, m2 = chan_merge(cnt, mean, m2, nb, part_mean[c, s], part_m2[c, s])
        mean_out[s] = mean
        m2_out[s] = m2


@_strict
def merge_states(count_a, mean_a, m2_a, lo_a, count_b, mean_b, m2_b, lo_b, count, mean, m2, lo):
    """Merge two ``(count, mean, M2, mean_lo)`` states elementwise into the
    last four arrays (:func:`nbnorm._welford.merge_states`: compensated
    means; a side with count 0 is the identity)."""
    for i in range(count.size):
        _, mean[i], lo[i], m2[i] = merge_state(float(count_a[i]), mean_a[i], lo_a[i], m2_a[i],
                                               float(count_b[i]), mean_b[i], lo_b[i], m2_b[i])
        count[i] = count_a[i] + count_b[i]


@_pjit
def merge_sums(part_s1, part_s2, s1_out, s2_out):
    """Sum chunk partials in order, per statistic (float64)."""
    n_chunks, n_stats = part_s1.shape
    for i_ in prange(n_stats):
        s = np.int64(i_)
        t1 = 0.0
        t2 = 0.0
        for c in range(n_chunks):
            t1 += part_s1[c, s]
            t2 += part_s2[c, s]
        s1_out[s] = t1
        s2_out[s] = t2
