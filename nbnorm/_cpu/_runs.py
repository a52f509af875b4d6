"""Indexing and the run helpers of the CPU kernels: sums, dual sums and
affine maps over one contiguous run (vectorized through windows with literal
offset 0 and stride 1); :mod:`._ranges` walks ranges of reduction indices
with them.
"""
from __future__ import annotations

import numpy as np

from numba.extending import overload

from ._access import acc_cast, acc_zero, load, maybe_window, plus_term, store, window
from ._jit import _EXACT, BLOCK, _exact, _inline, _inline_exact, _jit, _strict
from ._memory import LINE, item_aligned, line_head, stream_line, streamable
from ._skipna import skip_nan, term_count


# ---------------------------------------------------------------- indexing
@_jit
def _count(rsz):
    n = 1
    for s in rsz:
        n *= s
    return n


@_inline
def offset(lin, sizes, strides, nd):
    """Offset of C-order linear index ``lin`` (``0 ≤ lin <`` the product of
    the first ``nd`` of ``sizes``) with ``strides``: no division for the
    outermost dimension, which needs no wrap (none at all for one
    dimension).  No slicing: views would touch a shared refcount."""
    off = 0
    for d in range(nd - 1, 0, -1):
        q = lin // sizes[d]
        off += (lin - q * sizes[d]) * strides[d]
        lin = q
    if nd >= 1:
        off += lin * strides[0]
    return off


@_inline
def run_base(o, rsz, rstr):
    """Offset of the first element of run ``o``: :func:`offset` of the run
    index over all but the innermost reduced dimension (no division at all
    for a two-dimensional reduction, where runs are short and many)."""
    return offset(o, rsz, rstr, rsz.size - 1)


@_inline
def run_at(pos, end, rsz, rstr):
    """(offset, length) of the contiguous run starting at reduction index ``pos``.
    Inlined into the run loops (integer arithmetic: no value depends on it);
    called, the run walks measured 2–3 % slower in the NCHW forward."""
    nd = rsz.size
    inner = rsz[nd - 1]
    o = pos // inner
    i = pos - o * inner
    return run_base(o, rsz, rstr) + i * rstr[nd - 1], min(inner - i, end - pos)


@_inline
def run_cursor(pos, end, rsz, rstr):
    """``(base, r2, offset, length)`` of the run holding reduction index
    ``pos``: ``base`` the offset of the run's first element, ``r2`` its
    index along the second-innermost reduced dimension (see :func:`run_after`)."""
    nd = rsz.size
    inner = rsz[nd - 1]
    o = pos // inner
    i = pos - o * inner
    base = run_base(o, rsz, rstr)
    r2 = o % rsz[nd - 2] if nd >= 2 else 0
    return base, r2, base + i * rstr[nd - 1], min(inner - i, end - pos)


@_inline
def run_after(pos, end, rsz, rstr, base, r2):
    """:func:`run_cursor` of the run that starts at ``pos``, the run boundary
    after the run ``(base, r2)``: one stride further, without a division,
    unless the second-innermost dimension carries."""
    nd = rsz.size
    if nd < 2 or r2 + 1 == rsz[nd - 2]:
        return run_cursor(pos, end, rsz, rstr)
    base += rstr[nd - 2]
    return base, r2 + 1, base, min(rsz[nd - 1], end - pos)


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
        if not item_aligned(out, oo):
            # no line of a misaligned ``out`` starts on a line boundary
            head = m
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
    ``stream`` True are written by :func:`stream_run` (``stream`` None: that
    code is not compiled, see :func:`._memory.streamed`)."""
    if so == 1 and su == 1 and sv == 1:
        if stream is not None and m >= STREAM_RUN:   # pruned when None
            stream_run(out, oo, u, ou, v, ov, m, cu, ca, cv, cb, cc)
        else:
            run_affine(window(out, oo, m), 0, 1, window(u, ou, m), 0, 1, maybe_window(v, ov, m),
                       0, 1, m, cu, ca, cv, cb, cc)
    else:
        run_affine(out, oo, so, u, ou, su, v, ov, sv, m, cu, ca, cv, cb, cc)
