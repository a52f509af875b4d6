"""Unit tests of nbnorm._layout: axis normalisation and reduction plans."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nbnorm._layout import AxisError, flat_extent, make_plan, normalize_axis

from helpers import norm_axis, relayout
from strategies import axes, layouts, shapes


# ------------------------------------------------------------ normalize_axis
@pytest.mark.parametrize("axis,ndim,expect", [
    (None, 3, (0, 1, 2)), (None, 0, ()), (0, 1, (0,)), (-1, 4, (3,)), ((2, -4), 4, (0, 2)),
    ([1, 0], 2, (0, 1)), ((), 3, ()), (np.int64(-2), 3, (1,)),
])
def test_normalize_axis(axis, ndim, expect):
    assert normalize_axis(axis, ndim) == expect


@pytest.mark.parametrize("axis,ndim", [(3, 3), (-4, 3), ((0, 7), 3), (0, 0)])
def test_normalize_axis_out_of_range(axis, ndim):
    with pytest.raises(AxisError):
        normalize_axis(axis, ndim)


@pytest.mark.parametrize("axis", [(1, 1), (0, -3), (2, -1, 0)])
def test_normalize_axis_duplicates(axis):
    with pytest.raises(ValueError, match="duplicate"):
        normalize_axis(axis, 3)


@pytest.mark.parametrize("axis", [1.0, "0", (0, None)])
def test_normalize_axis_non_integer(axis):
    with pytest.raises(TypeError, match="axis"):
        normalize_axis(axis, 3)


# ----------------------------------------------------------------- make_plan
def elem_strides(a):
    return [s // a.itemsize for s in a.strides]


def enumerate_plan(plan, p):
    """(statistic position, flat offset) of every (k, r) the plan visits for operand p."""
    out = []
    for kidx in itertools.product(*[range(s) for s in plan.kept_sizes]):
        stat = int(np.dot(kidx, plan.stat_strides))
        koff = int(np.dot(kidx, plan.kept_strides[p]))
        for ridx in itertools.product(*[range(s) for s in plan.red_sizes]):
            out.append((stat, int(plan.bases[p]) + koff + int(np.dot(ridx, plan.red_strides[p]))))
    return sorted(out)


def expected_visits(a, axis):
    """(statistic position, flat offset from the lowest address) of every element of a,
    where a's values are their own positions in the underlying buffer."""
    kept = [d for d in range(a.ndim) if d not in axis]
    sshape = [a.shape[d] for d in kept]
    lo = int(a.min())
    out = []
    for idx in np.ndindex(a.shape):
        stat = int(np.ravel_multi_index([idx[d] for d in kept], sshape)) if kept else 0
        out.append((stat, int(a[idx]) - lo))
    return sorted(out)


def positions_view(shape, layout):
    """A view of ``shape`` whose values are their positions in its buffer."""
    v = relayout(np.zeros(shape, np.int64), **layout)
    base = v.base if v.base is not None else v
    while base.base is not None:
        base = base.base
    idx = np.indices(base.shape)
    base[...] = sum(idx[d] * (base.strides[d] // base.itemsize) for d in range(base.ndim))
    return v


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_plan_visits_every_element_once_for_every_operand(data):
    shape = data.draw(shapes(max_dims=5, max_size=300))
    nd = len(shape)
    ax = norm_axis(data.draw(axes(nd, allow_empty=True)), nd)
    ops = [positions_view(shape, data.draw(layouts(nd))) for _ in range(data.draw(st.integers(1, 3)))]
    plan = make_plan(shape, ax, [elem_strides(a) for a in ops])
    assert plan.n == int(np.prod([shape[d] for d in ax]))
    assert plan.n_stats == int(np.prod([shape[d] for d in range(nd) if d not in ax]))
    assert int(np.prod(plan.kept_sizes)) == plan.n_stats
    assert int(np.prod(plan.red_sizes)) == plan.n
    assert (plan.red_strides[0] >= 0).all()          # x's reduced dims walked forwards
    for p, a in enumerate(ops):
        assert enumerate_plan(plan, p) == expected_visits(a, ax)
        span, _ = flat_extent(a.shape, elem_strides(a))
        offs = [o for _, o in enumerate_plan(plan, p)]
        assert min(offs) >= 0 and max(offs) < span


def test_contiguous_nchw_merges_n_with_nothing_and_hw_together():
    x = np.empty((8, 3, 5, 7), np.float32)
    plan = make_plan(x.shape, (0, 2, 3), [elem_strides(x)])
    assert not plan.inner_kept
    assert list(plan.kept_sizes) == [3] and list(plan.red_sizes) == [8, 35]
    assert list(plan.red_strides[0]) == [105, 1] and list(plan.kept_strides[0]) == [35]


def test_full_reduction_of_contiguous_merges_to_one_dim():
    x = np.empty((4, 5, 6))
    plan = make_plan(x.shape, (0, 1, 2), [elem_strides(x)])
    assert list(plan.red_sizes) == [120] and list(plan.red_strides[0]) == [1]
    assert list(plan.kept_sizes) == [1] and plan.n_stats == 1


def test_channels_last_has_kept_innermost():
    x = np.empty((2, 4, 4, 3)).transpose(0, 3, 1, 2)     # NCHW view of NHWC
    plan = make_plan(x.shape, (0, 2, 3), [elem_strides(x)])
    assert plan.inner_kept and plan.inner_len == 3
    assert list(plan.red_sizes) == [32] and list(plan.red_strides[0]) == [3]


def test_negative_reduced_strides_are_flipped():
    x = np.empty((6, 5))[::-1, ::-1]
    plan = make_plan(x.shape, (0, 1), [elem_strides(x)])
    assert list(plan.red_sizes) == [30] and list(plan.red_strides[0]) == [1]
    assert plan.bases[0] == 0


def test_size_one_dims_are_dropped_and_no_merge_across_kept_reduced():
    x = np.empty((1, 3, 1, 4))
    plan = make_plan(x.shape, (0, 3), [elem_strides(x)])
    assert list(plan.kept_sizes) == [3] and list(plan.red_sizes) == [4]


def test_operands_with_different_layouts_prevent_merging():
    x = np.empty((4, 5))
    y = np.empty((4, 5), order="F")
    plan = make_plan(x.shape, (0, 1), [elem_strides(x), elem_strides(y)])
    assert list(plan.red_sizes) == [4, 5]
    assert [list(r) for r in plan.red_strides] == [[5, 1], [1, 4]]


@pytest.mark.parametrize("shape,strides,expect", [
    ((3, 4), (4, 1), (12, 0)), ((3, 4), (-4, 1), (12, 8)), ((3, 4), (1, -6), (21, 18)),
    ((0, 4), (4, 1), (0, 0)), ((5,), (0,), (1, 0)),
])
def test_flat_extent(shape, strides, expect):
    assert flat_extent(shape, strides) == expect
