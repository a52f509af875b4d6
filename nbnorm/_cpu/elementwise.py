"""The elementwise pass ``out = (u − cu)·ca + (v − cv)·cb + cc`` in memory
order, and the page-touching of fresh outputs.
"""
from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.extending import overload

from ._access import unowned
from ._jit import _exact, _pjit_exact, _strict, narrow_coefficients
from ._runs import _count, offset
from ._memory import store_fence
from .inner_kept import _super_rows, rows_affine, tile_columns


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
def affine(out, u, v, dims, chunk, n_chunks, cu, ca, cv, cb, cc, stream, widen):
    """``out = (u − cu[s])·ca[s] + (v − cv[s])·cb[s] + cc[s]`` for every
    element, ``s`` its statistic (``v`` may be None); operands (out, u, v).

    ``dims`` = (sizes, stat strides, strides, bases) of every dimension in memory
    order, so each work item streams a contiguous stretch of memory (fresh
    output pages are touched in order).  Runs of the innermost dimension get
    one coefficient set when it is reduced, per-element ones when it is kept;
    runs between two carries of the odometer go to :func:`rows_affine` in
    one call.  ``stream``: write long runs with streaming stores
    (:func:`._runs.affine_at`).  Computed in float32 for float16/float32
    storage where :func:`nbnorm._welford.narrow_coefficients` allows it,
    statistic by statistic (:func:`arithmetic`), as the fused kernels do.

    Returns False, having written nothing, when some statistic must be
    computed in float64 and ``widen`` is None: the caller launches again
    with ``widen`` True (:func:`.passes._affine_prepared`), so the code of
    that rare case is compiled only where a call needs it.
    """
    out, u, v, dims = unowned(out), unowned(u), unowned(v), unowned(dims)
    cu, ca, cv, cb, cc = unowned(cu), unowned(ca), unowned(cv), unowned(cb), unowned(cc)
    (nu, na, nv, nb, nc), wide, mixed = arithmetic(u, v, cu, ca, cv, cb, cc, widen)
    if mixed and widen is None:
        return False
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
    if n2 < 16 * q or mixed:
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
        tiles = np.empty((5, w if q > 1 else 0), nu.dtype)
        tiled = -1
        while pos < b:
            m = min(inner - i, b - pos)
            nr = 1
            if m == inner:  # whole runs up to the next carry or the chunk's end
                nr = min(n2 - r2, (b - pos) // inner)
            done = 0
            if q > 1 and nr >= q:
                if tiled != s:
                    tile_coefficients(tiles, s, inner, nu, na, nv, nb, nc)
                    tiled = s
                done = nr - nr % q
                rows_affine(out, oo, 1, w, u, ou, 1, w, v, ov, 1, w, w, done // q, 0, 1, 0,
                            tiles[0], tiles[1], tiles[2], tiles[3], tiles[4], stream, wide, mixed)
            rows_affine(out, oo + i * so + done * ro, so, ro, u, ou + i * su + done * ru, su, ru,
                        v, ov + i * sv + done * rv, sv, rv, m, nr - done, s + i * ss, ss, rs,
                        nu, na, nv, nb, nc, stream, wide, mixed)
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
        if stream is not None:
            store_fence()
    return True


@_strict
def narrowed(two, cu, ca, cv, cb, cc):
    """Per statistic: the float32 coefficients, whether
    :func:`nbnorm._welford.narrow_coefficients` allowed them, and whether
    any statistic was refused."""
    n = cu.size
    c32 = np.empty((5, n), np.float32)
    ok = np.empty(n, np.bool_)
    n_ok = 0
    for i in range(n):
        ok[i], c32[0, i], c32[1, i], c32[2, i], c32[3, i], c32[4, i] = (
            narrow_coefficients(cu[i], ca[i], cv[i], cb[i], cc[i], two))
        n_ok += ok[i]
    return (c32[0], c32[1], c32[2], c32[3], c32[4]), ok, n_ok < n


def arithmetic(u, v, cu, ca, cv, cb, cc, widen):
    """``((cu', ca', cv', cb', cc'), wide, mixed)``: the coefficients the
    elementwise pass computes with.  float64 storage: the given ones
    (``wide`` None).  float16/float32 storage: their float32 forms from
    :func:`nbnorm._welford.narrow_coefficients`, ``mixed`` whether any
    statistic must stay in float64 (its ``ok`` false) and, unless ``widen``
    is None, ``wide = (ok, cu, ca, cv, cb, cc)``: such a statistic takes
    those float64 coefficients (see :func:`.inner_kept.wide_at`)."""


@overload(arithmetic, jit_options={"fastmath": False, "error_model": "numpy"})
def _arithmetic(u, v, cu, ca, cv, cb, cc, widen):
    if u.dtype == types.float64:
        return lambda u, v, cu, ca, cv, cb, cc, widen: ((cu, ca, cv, cb, cc), None, False)

    def narrow(u, v, cu, ca, cv, cb, cc, widen):
        c32, ok, mixed = narrowed(v is not None, cu, ca, cv, cb, cc)
        return c32, (ok, cu, ca, cv, cb, cc), mixed

    def narrow_only(u, v, cu, ca, cv, cb, cc, widen):
        c32, _, mixed = narrowed(v is not None, cu, ca, cv, cb, cc)
        return c32, None, mixed
    return narrow_only if isinstance(widen, types.NoneType) else narrow


@_pjit_exact
def touch_pages(buf, page):
    """Write one byte per ``page`` bytes of a fresh buffer, in parallel and in
    memory order: the first-touch page faults of a new output then cost a
    fraction of what they cost when a kernel touches it in its own order."""
    for i_ in prange((buf.size + page - 1) // page):
        buf[np.int64(i_) * page] = 0
