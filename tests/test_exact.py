"""Exactness at large mean/std against an exact rational reference, on every
backend.

The documented claim (docs/design.md): the variance is within 1e-14 relative of the exact value of
the stored float64 data at mean/std = 1e8, within 1e-6 for float32 data at
mean/std = 1e4 (and for float16 data at 1e3, whose 11-bit significand cannot
resolve std = 1e-4·mean) — for every kernel shape (rows, short rows,
columns, NCHW, channels-last, ``axis=None``), each statistic spanning
several blocks and chunks, so that block and chunk merges are exercised.
The shapes are each backend's own: the CPU's blocks and chunks are larger
than a CUDA block, and the simulator needs small arrays;
``test_cuda_shapes_take_the_paths_they_are_meant_for`` checks that the CUDA
shapes still reach the mapping and split each one is there for.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import nbnorm

from exact import exact_moments, relative_error
from helpers import norm_axis, stat_dtype

# dtype: (mean, largest relative variance error); the standard deviation is 1
BOUNDS = {np.float64: (1e8, 1e-14), np.float32: (1e4, 1e-6), np.float16: (1e3, 1e-6)}

# name: (CPU shape, CUDA shape, axis); "channels-last" is the NCHW data seen
# through an NHWC layout
SHAPES = {
    "rows": ((2, 70000), (2, 4096), 1),
    "short rows": ((12, 512), (12, 512), 1),
    "columns": ((70000, 2), (512, 12), 0),
    "nchw": ((16, 2, 48, 48), (4, 3, 16, 16), (0, 2, 3)),
    "channels-last": ((16, 2, 48, 48), (4, 3, 16, 16), (0, 2, 3)),
    "axis=None": ((300, 500), (64, 64), None),
}
#: on CUDA (sizes of the simulator's launch constants): the thread mapping
#: and whether a statistic is split into several chunks
CUDA_PATHS = {"rows": (False, True), "short rows": (False, False), "columns": (True, True),
              "nchw": (False, True), "channels-last": (True, True), "axis=None": (False, True)}


def data(layout, dtype, seed, bk):
    """``(x, axis)``: ``loc + N(0, 1)`` in ``layout``, sized for backend ``bk``."""
    cpu_shape, cuda_shape, axis = SHAPES[layout]
    shape = cpu_shape if bk.name == "cpu" else cuda_shape
    rng = np.random.default_rng(seed)
    if layout == "channels-last":
        n, c, h, w = shape
        x = (BOUNDS[dtype][0] + rng.standard_normal((n, h, w, c))).astype(dtype)
        return x.transpose(0, 3, 1, 2), axis
    return (BOUNDS[dtype][0] + rng.standard_normal(shape)).astype(dtype), axis


def two_roundings(dtype):
    return 2 * float(np.finfo(stat_dtype(dtype)).eps)


@pytest.mark.parametrize("dtype", list(BOUNDS))
@pytest.mark.parametrize("layout", list(SHAPES))
def test_moments_variance_is_exact_at_large_offset(layout, dtype, backend):
    for seed in backend.sample(range(2), 1, salt=len(layout)):
        x, axis = data(layout, dtype, seed, backend)
        exact_mean, exact_var = exact_moments(x, axis)
        mean, var = backend.back(nbnorm.moments(backend.put(x), axis))
        assert relative_error(var, exact_var) < BOUNDS[dtype][1]
        assert relative_error(mean, exact_mean) <= two_roundings(dtype)


@pytest.mark.parametrize("dtype", list(BOUNDS))
@pytest.mark.parametrize("layout", list(SHAPES))
def test_forward_statistics_and_y_are_exact_at_large_offset(layout, dtype, backend):
    """The forward pass's own statistics: with momentum 1 the running
    statistics are the batch mean and the unbiased batch variance, each
    rounded once; ``1/invstd²`` (eps = 0) is the variance up to the rounding
    of invstd; ``y`` is within a few ulp of ``(x − exact mean)·invstd``
    with the returned invstd (checked on up to 4096 elements)."""
    x, axis = data(layout, dtype, 2, backend)
    exact_mean, exact_var = exact_moments(x, axis)
    n = x.size // exact_var.size
    rm, rv = backend.on(np.zeros(exact_var.shape), np.zeros(exact_var.shape))
    y, mean, invstd = backend.back(nbnorm.batch_norm_forward(
        backend.put(x), axis=axis, eps=0.0, running_mean=rm, running_var=rv, momentum=1.0))
    unbiased = np.vectorize(lambda v: v * Fraction(n, n - 1), otypes=[object])(exact_var)
    bound = BOUNDS[dtype][1]
    assert relative_error(backend.get(rv), unbiased) < bound
    assert relative_error(backend.get(rm), exact_mean) <= two_roundings(dtype)
    assert relative_error(mean, exact_mean) <= two_roundings(dtype)
    inv = np.asarray(invstd, np.float64)
    assert relative_error(1.0 / inv ** 2, exact_var) <= bound + 2 * two_roundings(dtype)

    ax = norm_axis(axis, x.ndim)
    keep = tuple(1 if d in ax else s for d, s in enumerate(x.shape))
    every = max(1, x.size // 4096)
    means = np.broadcast_to(exact_mean.reshape(keep), x.shape)
    flat = [a.reshape(-1)[::every] for a in (y, x, means, np.broadcast_to(inv.reshape(keep),
                                                                           x.shape))]
    worst = max(abs(Fraction(float(g)) - (Fraction(float(v)) - m) * Fraction(float(i)))
                / (1 + abs(float(g))) for g, v, m, i in zip(*flat))
    assert worst <= 64 * float(np.finfo(dtype).eps)


@pytest.mark.cuda
@pytest.mark.parametrize("layout", list(SHAPES))
def test_cuda_shapes_take_the_paths_they_are_meant_for(layout):
    """The CUDA shapes above exercise the thread mapping and the chunk split
    they were chosen for (a change of launch constants must not silently
    drop a path); the split is checked against the simulator's constants."""
    from helpers import Backend
    from nbnorm import _layout
    from nbnorm._cuda import device, launch
    bk = Backend("cuda")
    x, axis = data(layout, np.float32, 0, bk)
    d = bk.put(x)
    plan = launch.DevPlan(x.shape, _layout.normalize_axis(axis, x.ndim), launch.strides_of(d), 0)
    inner_kept, split = CUDA_PATHS[layout]
    assert plan.inner_kept == inner_kept
    if device.SIM:
        assert (plan.n_chunks > 1) == split
        assert plan.inner_kept or plan.width == device.TPB    # a full block per chunk


def test_reference_is_exact():
    """The reference itself: a case whose moments are known in closed form."""
    x = np.array([1e8 + 1, 1e8 - 1, 1e8 + 2, 1e8 - 2])
    mean, var = exact_moments(x, 0)
    assert mean[()] == Fraction(10**8) and var[()] == Fraction(5, 2)
    assert relative_error(np.array(2.5 * (1 + 2e-16)), var) > 0


@pytest.mark.parametrize("dtype", list(BOUNDS))
def test_variance_is_exact_when_the_mean_wanders(dtype, backend):
    """Blocks after the first are summed in one pass about the mean so far
    when that is close to theirs, and in two passes where it is not: data
    whose level steps by 10 std every 1000 values, and a channel of two
    constants, take both routes and stay within the same bound."""
    loc, bound = BOUNDS[dtype]
    n = 70000 if backend.name == "cpu" else 4096
    rng = np.random.default_rng(7)
    steps = 10.0 * (np.arange(n) // 1000)
    two_levels = np.where(np.arange(n) < n // 2 + 123, 0.0, 64.0)
    x = (loc + np.stack([steps + rng.standard_normal(n), two_levels])).astype(dtype)
    exact_mean, exact_var = exact_moments(x, 1)
    mean, var = backend.back(nbnorm.moments(backend.put(x), 1))
    assert relative_error(var, exact_var) < bound
    assert relative_error(mean, exact_mean) <= two_roundings(dtype)
