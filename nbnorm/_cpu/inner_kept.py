"""Reductions whose innermost dimension is kept (channels-last, columns):
work items are (outer statistic, tile of adjacent statistics, chunk of
rows); each row is a vector over the tile, narrow back-to-back rows ``q``
at a time.
"""
from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.extending import overload

from ._access import acc_zero, load, maybe_window, store, plus_term, unowned, window
from ._jit import (BLOCK, GROUP_ROWS, ROWS_BLOCK, SUPER_ROW, _exact, _inline_exact, _jit, _pjit,
                   chan_merge, shifted_moments)
from ._runs import _count, affine_at, finite_or_zero, offset, pivot_at, run_affine, run_at
from ._skipna import column_count, count_columns, skip_nan_at


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
def tile_chunk_item(i_, n_tiles, n_chunks, ksz, tile):
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
              (load(u, ou + j * su) - cu[k]) * ca[k]
              + plus_term(v, ov + j * sv, cv[k], cb[k], cc[k]))


def wide_at(wide, k):
    """``(use, cu, ca, cv, cb, cc)``: whether statistic ``k`` is computed in
    float64 (:func:`nbnorm._welford.narrow_coefficients` refused float32)
    and its float64 coefficients; ``wide`` None (every statistic in the
    coefficients' own type) gives a constant False."""


@overload(wide_at, inline="always")
def _wide_at(wide, k):
    if isinstance(wide, types.NoneType):
        return lambda wide, k: (False, 0.0, 0.0, 0.0, 0.0, 0.0)
    return lambda wide, k: (not wide[0][k], wide[1][k], wide[2][k], wide[3][k], wide[4][k],
                            wide[5][k])


@_exact
def rows_affine(out, oo, so, ro, u, ou, su, ru, v, ov, sv, rv, m, nr, cs, css, rs,
                cu, ca, cv, cb, cc, stream, wide, mixed):
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` over ``nr`` runs of ``m``
    elements; run ``r`` starts at ``oo + r·ro`` (``ou + r·ru``, ``ov + r·rv``)
    and its element ``j`` belongs to statistic ``cs + r·rs + j·css``
    (``stream``: see :func:`._runs.affine_at`; runs of one statistic only).
    Statistics that ``wide`` (:func:`wide_at`) marks take its float64
    coefficients instead of ``cu … cc`` (``mixed``: whether any does); with
    ``wide`` None that code is not compiled."""
    if css == 0:
        if wide is None:
            for r in range(nr):
                k = cs + r * rs
                if stream is None and so == 1 and su == 1 and sv == 1:
                    # affine_at's unit-stride case written out: a call per
                    # run cost about as much as a short run's arithmetic
                    run_affine(window(out, oo + r * ro, m), 0, 1, window(u, ou + r * ru, m), 0,
                               1, maybe_window(v, ov + r * rv, m), 0, 1, m, cu[k], ca[k], cv[k],
                               cb[k], cc[k])
                else:
                    affine_at(out, oo + r * ro, so, u, ou + r * ru, su, v, ov + r * rv, sv, m,
                              cu[k], ca[k], cv[k], cb[k], cc[k], stream)
        else:
            for r in range(nr):
                k = cs + r * rs
                use, wu, wa, wv, wb, wc = wide_at(wide, k)
                if use:
                    affine_at(out, oo + r * ro, so, u, ou + r * ru, su, v, ov + r * rv, sv, m,
                              wu, wa, wv, wb, wc, stream)
                else:
                    affine_at(out, oo + r * ro, so, u, ou + r * ru, su, v, ov + r * rv, sv, m,
                              cu[k], ca[k], cv[k], cb[k], cc[k], stream)
    elif wide is not None and mixed:
        for r in range(nr):
            row_mixed(out, oo + r * ro, so, u, ou + r * ru, su, v, ov + r * rv, sv, m,
                      cs + r * rs, css, cu, ca, cv, cb, cc, wide)
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
def row_mixed(out, oo, so, u, ou, su, v, ov, sv, m, cs, css, cu, ca, cv, cb, cc, wide):
    """:func:`row_affine` where some statistics take ``wide``'s float64
    coefficients (a scalar loop: only data near the ends of float32's range
    get here)."""
    for j in range(m):
        k = cs + j * css
        use, wu, wa, wv, wb, wc = wide_at(wide, k)
        if use:
            store(out, oo + j * so,
                  (load(u, ou + j * su) - wu) * wa + plus_term(v, ov + j * sv, wv, wb, wc))
        else:
            store(out, oo + j * so,
                  (load(u, ou + j * su) - cu[k]) * ca[k]
                  + plus_term(v, ov + j * sv, cv[k], cb[k], cc[k]))


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
def moments_inner_kept(x, p, tile, chunk, n_chunks, part_count, part_mean, part_m2, pivots):
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
    # operands without reference counts (part_count stays the argument: a
    # branch on it being None is pruned when the kernel compiles)
    x, counts, part_mean, part_m2 = (unowned(x), unowned(part_count), unowned(part_mean),
                                     unowned(part_m2))
    pivots = unowned(pivots)
    ksz, kstat, kstr, rsz, rstr, bases = unowned(p)
    r0 = rstr[0]
    k0 = kstr[0]
    n = _count(rsz)
    n_tiles = (ksz[-1] + tile - 1) // tile
    n_outer = part_mean.shape[1] // ksz[-1]
    sj = k0[-1]
    ss = kstat[-1]
    for i_ in prange(n_outer * n_tiles * n_chunks):
        ko, j0, nt, c = tile_chunk_item(i_, n_tiles, n_chunks, ksz, tile)
        xb = bases[0] + offset(ko, ksz, k0, ksz.size - 1) + j0 * sj
        sb = offset(ko, ksz, kstat, ksz.size - 1) + j0 * ss
        a = c * chunk
        b = min(a + chunk, n)
        q = _super_rows(nt, sj == 1 and r0[-1] == nt)
        zero = acc_zero(x)
        shift = np.full(q * nt, zero)
        s0 = count_columns(counts, q * nt, zero)
        s1 = np.full(q * nt, zero)
        s2 = np.full(q * nt, zero)
        t0 = count_columns(counts, nt, 0.0)
        t1 = np.zeros(nt)      # float64 columns: long blocks stay exact
        t2 = np.zeros(nt)
        pivot = np.empty(nt)
        for j in range(nt):
            pivot[j] = pivot_at(x, xb + j * sj, rsz, r0, counts)
        cnt = np.zeros(nt)
        mean = np.zeros(nt)
        m2 = np.zeros(nt)
        rows = max(1, ROWS_BLOCK // nt)
        group = _group_rows(nt, q)
        o0 = xb + offset(a, rsz, r0, rsz.size)
        for j in range(nt):
            shift[j] = finite_or_zero(x, load(x, o0 + j * sj))
        tile_columns(shift, nt)
        nan_seen = False
        for blk in range(a, b, rows):
            e = min(blk + rows, b)
            nb = e - blk
            nan_seen = block_sums(t0, t1, t2, s0, s1, s2, x, xb, rsz, r0, blk, e, sj, shift,
                                  group, q, nan_seen)
            if not shift_near_mean(t0, t1, t2, nb):
                for j in range(nt):
                    shift[j] = finite_or_zero(x, shift[j] + t1[j] / column_count(t0, j, nb))
                tile_columns(shift, nt)
                nan_seen = block_sums(t0, t1, t2, s0, s1, s2, x, xb, rsz, r0, blk, e, sj,
                                      shift, group, q, nan_seen)
            for j in range(nt):
                n_j = float(column_count(t0, j, nb))
                mb, m2b = shifted_moments(n_j, float(shift[j]) - pivot[j], t1[j], t2[j])
                cnt[j], mean[j], m2[j] = chan_merge(cnt[j], mean[j], m2[j], n_j, mb, m2b)
                shift[j] = finite_or_zero(x, pivot[j] + mean[j])
            tile_columns(shift, nt)
        for j in range(nt):
            if part_count is not None:
                counts[c, sb + j * ss] = cnt[j]
            part_mean[c, sb + j * ss] = mean[j]
            part_m2[c, sb + j * ss] = m2[j]
            if c == 0:
                pivots[sb + j * ss] = pivot[j]


@_jit
def block_sums(t0, t1, t2, s0, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q, nan_seen):
    """:func:`rows_shifted` into zeroed ``t0`` (unless None), ``t1``, ``t2``;
    returns whether NaNs were skipped (``nan_seen`` of the next block).

    NaNs are looked for only where they are: the plain sums first, and when
    counting (``t0`` not None) the block again with NaN skipping only if a
    column's sum came out NaN; otherwise every column counts ``b − a``.  Once
    a work item has met NaNs (a land mask: the same columns in every block)
    its later blocks are summed with NaN skipping straight away."""
    t1[:] = 0.0
    t2[:] = 0.0
    if t0 is not None and nan_seen:
        t0[:] = 0.0
        rows_shifted(t0, t1, t2, s0, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q)
        return True
    rows_shifted(None, t1, t2, None, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q)
    if t0 is not None:
        t0[:] = b - a
        if np.isnan(t1).any():
            t0[:] = 0.0
            t1[:] = 0.0
            t2[:] = 0.0
            rows_shifted(t0, t1, t2, s0, s1, s2, x, xb, rsz, rstr, a, b, sj, shift, rows, q)
            return True
    return False


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
def dual_sums_inner_kept(dy, x, p, mu, tile, chunk, n_chunks, part_s1, part_s2):
    """Channels-last chunk partials of ``Σ dy`` and ``Σ dy·(x − mean)``."""
    dy, x, mu, part_s1, part_s2 = (unowned(dy), unowned(x), unowned(mu), unowned(part_s1),
                                   unowned(part_s2))
    ksz, kstat, kstr, rsz, rstr, bases = unowned(p)
    r0 = rstr[0]
    r1 = rstr[1]
    n = _count(rsz)
    n_tiles = (ksz[-1] + tile - 1) // tile
    n_outer = part_s1.shape[1] // ksz[-1]
    sd = kstr[0][-1]
    sx = kstr[1][-1]
    ss = kstat[-1]
    for i_ in prange(n_outer * n_tiles * n_chunks):
        ko, j0, nt, c = tile_chunk_item(i_, n_tiles, n_chunks, ksz, tile)
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
