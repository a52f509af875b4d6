"""Where a normalization's statistics and affine parameters lie; shared by
every backend.

Every member of the family (layer, group, instance and RMS norm) is

    y[i] = (x[i] − c[k(i)])·invstd[k(i)]·weight[j(i)] + bias[j(i)]

with statistics over one set of axes and affine parameters indexed by
another.  A :class:`Geometry` says which:

- a *view* of ``x``: its shape, with the channel axis of group and instance
  norm split into ``(G, C/G)`` (strides ``(s·C/G, s)``: a view, no copy);
- ``axis``: the reduced axes of the view; the statistic ``k(i)`` is the
  index over the others (C order);
- ``param_strides``: ``j(i)`` as element strides of the flat parameter
  vector over the view's dimensions, 0 where the parameter does not vary —
  so the backends address the parameters as one more operand of the
  :class:`~nbnorm._layout.Plan`.

The members:

===========  ====================================  ==========================
member       statistics over                        weight/bias indexed by
===========  ====================================  ==========================
layer, RMS   ``axis`` (any subset)                  the ``axis`` dims (C order)
group        per (n, g): C/G channels × the rest   the channel
instance     per (n, c): the rest                   the channel
===========  ====================================  ==========================

RMS norm has ``c = 0`` and ``invstd = 1/√(mean(x²) + eps)``; the others
``c = mean`` and ``invstd = 1/√(var + eps)`` (biased variance).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from math import prod

from ._layout import AxisError, normalize_axis


@dataclass(frozen=True)
class Geometry:
    shape: tuple            # x's shape
    view_shape: tuple       # x's shape with the split channel axis as (G, C/G)
    axis: tuple             # reduced axes of the view
    stat_shape: tuple       # shape of mean/invstd
    param_shape: tuple      # shape of weight/bias
    param_strides: tuple    # element strides of the parameter vector over the view
    split: int = -1         # axis of x split into (G, C/G); -1: none
    groups: int = 1

    @property
    def n(self):
        """Values per statistic."""
        return prod(self.view_shape[d] for d in self.axis)

    @property
    def n_params(self):
        return prod(self.param_shape)

    def view_strides(self, strides):
        """Strides over the view of an array of ``shape`` with ``strides``
        (any unit): the split axis ``s`` becomes ``(s·C/G, s)``."""
        strides = tuple(strides)
        if self.split < 0:
            return strides
        c = self.split
        per = self.shape[c] // self.groups
        return strides[:c] + (strides[c] * per, strides[c]) + strides[c + 1:]


def _c_strides(shape):
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


def over_axes(shape, axis, *, argname="axis"):
    """Layer and RMS norm: statistics over ``axis``, parameters of the shape
    of the normalized dims ``tuple(shape[a] for a in sorted(axis))``."""
    ax = normalize_axis(axis, len(shape), argname=argname)
    if not ax:
        raise ValueError(f"{argname}: expected at least one axis to normalize over, got {axis!r}")
    pshape = tuple(shape[a] for a in ax)
    pc = dict(zip(ax, _c_strides(pshape)))
    return Geometry(tuple(shape), tuple(shape), ax, tuple(s for d, s in enumerate(shape)
                                                          if d not in ax),
                    pshape, tuple(pc.get(d, 0) for d in range(len(shape))))


def channel_axis_of(shape, channel_axis):
    """``channel_axis`` as a non-negative int: not the batch axis 0."""
    if len(shape) < 2:
        raise ValueError(f"x: expected at least 2 dimensions (batch, channels, …), got shape "
                         f"{tuple(shape)}")
    try:
        c = operator.index(channel_axis)
    except TypeError:
        raise TypeError(f"channel_axis: expected an int, got {type(channel_axis).__name__} "
                        f"{channel_axis!r}") from None
    if not -len(shape) <= c < len(shape):
        raise AxisError(c, len(shape), msg_prefix="channel_axis")
    c %= len(shape)
    if c == 0:
        raise ValueError("channel_axis: axis 0 is the batch axis; expected the channel axis "
                         "(1 for NCHW, -1 for channels-last)")
    return c


def per_group(shape, channel_axis, groups):
    """Group norm (instance norm: ``groups`` = C): statistics per (n, g) over
    C/G channels and every axis but 0 and the channel axis; mean/invstd
    ``(N, G)``; parameters per channel ``(C,)``."""
    c = channel_axis_of(shape, channel_axis)
    try:
        groups = operator.index(groups)
    except TypeError:
        raise TypeError(f"num_groups: expected an int, got {type(groups).__name__} "
                        f"{groups!r}") from None
    C = shape[c]
    if groups < 1:
        raise ValueError(f"num_groups: expected a positive int, got {groups}")
    if C % groups:
        raise ValueError(f"num_groups: the {C} channels of x (axis {c} of shape {tuple(shape)}) "
                         f"are not divisible into {groups} groups")
    view = tuple(shape[:c]) + (groups, C // groups) + tuple(shape[c + 1:])
    kept = (0, c)                                   # batch, group (in the view)
    axis = tuple(d for d in range(len(view)) if d not in kept)
    pstrides = [0] * len(view)
    pstrides[c], pstrides[c + 1] = C // groups, 1
    return Geometry(tuple(shape), view, axis, (shape[0], groups), (C,), tuple(pstrides),
                    split=c, groups=groups)
