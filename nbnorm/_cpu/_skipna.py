"""Compile-time NaN skipping for the CPU reductions (``skipna``).

Each helper takes an argument that is None or an array and is resolved by
that type when its caller is compiled, as ``plus_term`` in ``_access`` is:
with None every value counts and the code compiled is that of the plain
sums (the counts are known from the shape); with an array NaNs are left
out of the sums and the other values counted.  The arguments are the
kernels' chunk-count array ``part_count`` (or None), handed down as
``skipna`` where only its type matters, and the channels-last column
counts ``s0``/``t0``.  A NaN becomes a zero term through a ``select``, not
a branch, so the loops that sum terms still vectorize.
"""
from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from ._access import acc_cast, acc_zero


@intrinsic
def select(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM ``select``: no branch (which would
    keep a loop from vectorizing); ``a`` and ``b`` of one type."""
    if not isinstance(cond, types.Boolean) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.select(*args)

    return a(cond, a, b), codegen


def skip_nan(skipna, x, v, n):
    """``(term, count)`` after value ``v`` with ``n`` terms counted so far:
    ``(v, n + 1)``, or ``(0, n)`` when ``v`` is NaN, in ``x``'s accumulator
    type (selects: a loop summing them still vectorizes); ``(v, n)`` when
    ``skipna`` is None."""


@overload(skip_nan, inline="always")
def _skip_nan(skipna, x, v, n):
    if isinstance(skipna, types.NoneType):
        return lambda skipna, x, v, n: (v, n)

    def impl(skipna, x, v, n):
        ok = v == v
        zero = acc_zero(x)
        return select(ok, v, zero), n + select(ok, acc_cast(x, 1.0), zero)
    return impl


def skip_nan_at(s0, j, x, v):
    """The term of ``v`` by :func:`skip_nan`, counted in ``s0[j]``; ``v``
    itself when ``s0`` is None."""


@overload(skip_nan_at, inline="always")
def _skip_nan_at(s0, j, x, v):
    if isinstance(s0, types.NoneType):
        return lambda s0, j, x, v: v

    def impl(s0, j, x, v):
        v, s0[j] = skip_nan(s0, x, v, s0[j])
        return v
    return impl


def term_count(skipna, n, m):
    """Terms of a run of ``m`` values of which :func:`skip_nan` counted ``n``:
    ``n`` as int64, or ``m`` when ``skipna`` is None."""


@overload(term_count, inline="always")
def _term_count(skipna, n, m):
    if isinstance(skipna, types.NoneType):
        return lambda skipna, n, m: m
    return lambda skipna, n, m: np.int64(n)


def count_columns(part_count, w, zero):
    """``w`` zeros of ``zero``'s type to count column terms in, or None when
    ``part_count`` is None."""


@overload(count_columns, inline="always")
def _count_columns(part_count, w, zero):
    if isinstance(part_count, types.NoneType):
        return lambda part_count, w, zero: None
    return lambda part_count, w, zero: np.full(w, zero)


def column_count(t0, j, nb):
    """Terms of column ``j`` in a block of ``nb`` rows: ``t0[j]``, or ``nb``
    when ``t0`` is None."""


@overload(column_count, inline="always")
def _column_count(t0, j, nb):
    if isinstance(t0, types.NoneType):
        return lambda t0, j, nb: nb
    return lambda t0, j, nb: t0[j]
