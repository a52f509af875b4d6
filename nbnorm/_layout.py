"""Axis and memory-layout handling, shared by every backend.

A reduction over ``axis`` of an array of any strides is described by a
:class:`Plan`: the dimensions are split into *kept* dimensions (those that
index a statistic) and *reduced* dimensions (those summed over), ordered
outer → inner by the memory order of ``x``, and adjacent dimensions are merged
wherever every operand's strides allow it.  Kernels then walk

    element(k, r) = base[p] + Σ_d kept_index_d(k)·kept_strides[p, d]
                            + Σ_d red_index_d(r)·red_strides[p, d]

for operand ``p``, statistic ``k`` (its C-order position in the statistic
array is Σ_d kept_index_d(k)·stat_strides[d]) and reduction index ``r``.
Nothing is copied: every operand is read in place through a flat 1-D view
that starts at its lowest address (:func:`flat_extent`).

The innermost dimension (smallest stride of ``x``) decides the kernel shape:
when it is reduced (NCHW over (0, 2, 3), rows of (N, D)) kernels stream along
contiguous runs of one statistic; when it is kept (channels-last, axis=0 of
(N, D)) they stream along rows of adjacent statistics.  Elementwise passes
need no kept/reduced split: they use ``order_*``, every merged dimension in
memory order, where a stat stride of 0 marks a reduced dimension.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from math import prod

import numpy as np

try:  # NumPy ≥ 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover
    from numpy import AxisError

__all__ = ["AxisError", "Plan", "normalize_axis", "make_plan", "flat_extent"]


def normalize_axis(axis, ndim, *, argname="axis"):
    """Return ``axis`` as a sorted tuple of non-negative ints.

    ``None`` means every axis.  Raises ``TypeError`` for non-integers,
    ``AxisError`` for out-of-range values and ``ValueError`` for duplicates.
    """
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(
                f"{argname}: expected an int or a tuple of ints, got {type(a).__name__} {a!r}"
            ) from None
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim, msg_prefix=argname)
        out.append(a % ndim if ndim else a)
    if len(set(out)) != len(out):
        raise ValueError(f"{argname}: duplicate value in {tuple(items)!r}")
    return tuple(sorted(out))


def stat_shape(shape, axis):
    """Shape of a statistic: ``shape`` without the ``axis`` dimensions."""
    return tuple(s for d, s in enumerate(shape) if d not in axis)


@dataclass(frozen=True, eq=False)  # hashed by identity: plans are cached
class Plan:
    """Canonical loop nest of a reduction over ``axis`` for several operands.

    All arrays are int64.  ``kept_*`` and ``red_*`` have at least one entry
    (size-1 padding), ordered outer → inner; strides are in elements.
    """

    n: int                      # elements reduced into each statistic
    n_stats: int                # number of statistics (prod of stat shape)
    inner_kept: bool            # innermost (smallest-stride) dim of x is kept
    kept_sizes: np.ndarray      # (nk,)
    stat_strides: np.ndarray    # (nk,) strides in the C-contiguous statistic
    kept_strides: np.ndarray    # (nops, nk)
    red_sizes: np.ndarray       # (nr,)
    red_strides: np.ndarray     # (nops, nr)
    bases: np.ndarray           # (nops,) offset of element [0, …, 0] in each flat view
    # every merged dim, kept and reduced, in memory order (for elementwise
    # passes, which need no split): stat stride 0 marks a reduced dim
    order_sizes: np.ndarray     # (nd,)
    order_stat_strides: np.ndarray  # (nd,)
    order_strides: np.ndarray   # (nops, nd)

    @property
    def inner_len(self):
        """Length of the innermost run (kept or reduced, per ``inner_kept``)."""
        return int(self.kept_sizes[-1] if self.inner_kept else self.red_sizes[-1])


def _element_strides(shape, strides, itemsize, name):
    out = []
    for s in strides:
        if s % itemsize:
            raise ValueError(
                f"{name}: strides {tuple(strides)} are not multiples of the item size {itemsize}"
            )
        out.append(s // itemsize)
    return out


def flat_extent(shape, strides):
    """``(span, base)`` of a strided array, in elements.

    ``span`` is the number of elements between its lowest and highest address
    (inclusive); ``base`` is the position of element ``[0, …, 0]`` in a flat
    view that starts at the lowest address.
    """
    if prod(shape) == 0:
        return 0, 0
    lo = sum(s * (n - 1) for n, s in zip(shape, strides) if s < 0)
    hi = sum(s * (n - 1) for n, s in zip(shape, strides) if s > 0)
    return hi - lo + 1, -lo


def statistic_strides(shape, axis):
    """Element strides over ``shape`` of the C-contiguous statistic of a
    reduction over ``axis``: 0 along the reduced axes (a statistic read per
    element is one more operand of a plan)."""
    out = [0] * len(shape)
    acc = 1
    for d in reversed(range(len(shape))):
        if d not in axis:
            out[d] = acc
            acc *= shape[d]
    return out


def dense_strides(shape, strides, itemsize):
    """Byte strides of a dense array of ``shape`` laid out in the memory order
    of an array with ``strides`` (NumPy's ``order="K"``): dimensions by
    decreasing ``|stride|``, ties in axis order."""
    order = sorted(range(len(shape)), key=lambda d: -abs(strides[d]))
    out = [0] * len(shape)
    acc = itemsize
    for d in reversed(order):
        out[d] = acc
        acc *= shape[d]
    return tuple(out)


def make_plan(shape, axis, operand_strides):
    """Build the :class:`Plan` of a reduction of ``shape`` over ``axis``.

    ``operand_strides`` lists each full-size operand's strides *in elements*;
    the first one (``x``) decides the traversal order.  ``axis`` must already
    be normalized.
    """
    ndim = len(shape)
    nops = len(operand_strides)
    sshape = stat_shape(shape, axis)
    stat_c = statistic_strides(shape, axis)
    bases = [flat_extent(shape, st)[1] for st in operand_strides]

    # (size, is_kept, stat_stride, [stride per operand]) for dims of size > 1;
    # reduced dims with a negative x stride are walked backwards (order of a
    # sum does not matter), so x's reduced strides are all ≥ 0.
    dims = []
    for d in range(ndim):
        if shape[d] == 1:
            continue
        st = [operand_strides[p][d] for p in range(nops)]
        kept = d not in axis
        if not kept and st[0] < 0:
            for p in range(nops):
                bases[p] += st[p] * (shape[d] - 1)
            st = [-s for s in st]
        dims.append([shape[d], kept, stat_c[d], st])
    dims.sort(key=lambda t: -abs(t[3][0]))  # stable: ties keep axis order

    merged = []
    for dim in dims:
        if merged:
            outer = merged[-1]
            size_i, kept_i, ss_i, st_i = dim
            if (
                outer[1] == kept_i
                and all(outer[3][p] == st_i[p] * size_i for p in range(nops))
                and (not kept_i or outer[2] == ss_i * size_i)
            ):
                outer[0] *= size_i
                outer[2] = ss_i
                outer[3] = st_i
                continue
        merged.append(dim)

    order = merged or [[1, True, 0, [0] * nops]]
    kept = [m for m in merged if m[1]]
    red = [m for m in merged if not m[1]]
    inner_kept = bool(merged) and merged[-1][1]
    if not kept:
        kept = [[1, True, 0, [0] * nops]]
    if not red:
        red = [[1, False, 0, [0] * nops]]

    def ints(v):
        return np.ascontiguousarray(np.array(v, dtype=np.int64))

    return Plan(
        n=prod(shape[d] for d in axis),
        n_stats=prod(sshape),
        inner_kept=inner_kept,
        kept_sizes=ints([m[0] for m in kept]),
        stat_strides=ints([m[2] for m in kept]),
        kept_strides=ints([[m[3][p] for m in kept] for p in range(nops)]).reshape(nops, len(kept)),
        red_sizes=ints([m[0] for m in red]),
        red_strides=ints([[m[3][p] for m in red] for p in range(nops)]).reshape(nops, len(red)),
        bases=ints(bases),
        order_sizes=ints([m[0] for m in order]),
        order_stat_strides=ints([m[2] if m[1] else 0 for m in order]),
        order_strides=ints([[m[3][p] for m in order] for p in range(nops)]).reshape(nops, len(order)),
    )


def element_strides(arr, name):
    """Strides of a NumPy-like array in elements (ValueError if not whole)."""
    return _element_strides(arr.shape, arr.strides, arr.dtype.itemsize, name)
