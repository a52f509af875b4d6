"""nbnorm.batch_norm_backward against the float64 reference and finite differences,
on every backend, with the checks of ``checks.py``; its Hypothesis sweep is in
``test_sweep.py``."""
from __future__ import annotations

import numpy as np
import pytest

import nbnorm
from nbnorm import reference as R

from checks import check_backward
from helpers import (FLOATS, eps, all_axis_subsets, assert_within, channels_last, named_layouts,
                     norm_axis, normal, stat_dtype, stat_shape)


def setup(x, axis, seed, with_weight=True):
    """dy (x's dtype), weight, and the forward statistics of x."""
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(x.shape).astype(x.dtype)
    sshape = stat_shape(x.shape, norm_axis(axis, x.ndim))
    w = rng.standard_normal(sshape).astype(stat_dtype(x.dtype)) if with_weight else None
    _, mean, invstd = nbnorm.batch_norm_forward(x, axis=axis)
    return dy, w, mean, invstd


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", FLOATS)
def test_every_axis_subset_and_layout_of_4d(dtype, training, backend):
    x0 = normal((3, 4, 5, 6), dtype, seed=50, loc=1.0, scale=2.0)
    cases = [(x, ax) for x in named_layouts(x0).values() for ax in all_axis_subsets(4)]
    for x, ax in backend.sample(cases, 3, salt=2 * FLOATS.index(dtype) + training):
        dy, w, mean, invstd = setup(x, ax, seed=len(ax))
        check_backward(dy, x, mean, invstd, w, ax, training, bk=backend)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", [
    ((4, 2, 128, 130), (0, 2, 3)),     # few channels: chunked sums
    ((4, 70, 10, 10), (0, 2, 3)),      # many channels: fused kernel
    ((40000, 3), 0),                   # kept innermost dim
    ((20001, 8), 0),                   # narrow kept rows read 16 at a time, odd remainder
    ((3001, 60), (0,)),                # 2 rows at a time
])
def test_chunked_fused_and_channels_last_paths(shape, axis, dtype, training, large_backend):
    backend = large_backend
    x = normal(shape, dtype, seed=51, loc=-1.0)
    dy, w, mean, invstd = setup(x, axis, seed=2)
    check_backward(dy, x, mean, invstd, w, axis, training, bk=backend)
    if len(shape) == 4:
        check_backward(channels_last(dy), channels_last(x), mean, invstd, w, axis, training,
                       bk=backend)


@pytest.mark.parametrize("dtype,loc", [(np.float32, 1e4), (np.float64, 1e8)])
def test_large_offset(dtype, loc, backend):
    x = normal(backend.fit((6, 3, 20, 20)), dtype, seed=52, loc=loc)
    for xv in backend.sample(named_layouts(x).values(), 2, salt=int(loc)):
        dy, w, mean, invstd = setup(xv, (0, 2, 3), seed=3)
        check_backward(dy, xv, mean, invstd, w, (0, 2, 3), bk=backend)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("target", ["dy", "x"])
def test_in_place_over_dy_or_x(target, training, backend):
    """out=dy and out=x: dx overwrites the named input, on every layout."""
    x0 = normal((4, 3, 5, 6), np.float32, seed=59, loc=2.0)
    cases = [(name, ax) for name in named_layouts(x0) for ax in ((0, 2, 3), (1,), (3,))]
    for name, ax in backend.sample(cases, 2, salt=2 * training + (target == "x")):
        x = named_layouts(x0)[name]
        dy, w, mean, invstd = setup(x, ax, seed=7)
        out = dy if target == "dy" else x
        check_backward(dy, x, mean, invstd, w, ax, training, out=out, bk=backend)


# ------------------------------------------------------ finite differences
def fd_check(loss, params, grads, h=1e-6, rtol=1e-6):
    """Central differences of ``loss`` w.r.t. every entry of every array in
    ``params`` against ``grads``."""
    for p, g in zip(params, grads):
        num = np.empty(p.shape)
        for i in np.ndindex(p.shape):
            old = p[i]
            step = h * max(1.0, abs(old))
            p[i] = old + step
            up = loss()
            p[i] = old - step
            down = loss()
            p[i] = old
            num[i] = (up - down) / (2 * step)
        scale = np.abs(num).max() + 1e-12
        np.testing.assert_allclose(g, num, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("shape,axis", [((4, 3, 2, 2), (0, 2, 3)), ((5, 3), 0),
                                        ((2, 3, 4), (0, 2)), ((3, 2, 2, 2), (1, 3))])
def test_training_gradient_matches_finite_differences(shape, axis, backend):
    """L = Σ y·g through batch_norm_forward; dL/dx, dL/dw, dL/db from backward."""
    x = normal(shape, np.float64, seed=53, loc=0.3)
    sshape = stat_shape(shape, norm_axis(axis, len(shape)))
    rng = np.random.default_rng(54)
    w = rng.standard_normal(sshape) + 1.0
    b = rng.standard_normal(sshape)
    g = rng.standard_normal(shape)

    def loss():
        return float(np.sum(nbnorm.batch_norm_forward(x, w, b, axis=axis, eps=1e-3)[0] * g))

    _, mean, invstd = nbnorm.batch_norm_forward(x, w, b, axis=axis, eps=1e-3)
    views = ((x, g), (np.asfortranarray(x), channels_last(g) if len(shape) == 4 else g))
    for xv, gv in backend.sample(views, 1, salt=len(shape)):
        grads = backend.back(nbnorm.batch_norm_backward(*backend.on(gv, xv, mean, invstd, w),
                                                        axis=axis))
        fd_check(loss, [x, w, b], grads)


@pytest.mark.parametrize("shape,axis", [((4, 3, 2, 2), (0, 2, 3)), ((5, 3), 1)])
def test_frozen_gradient_matches_finite_differences(shape, axis, backend):
    """L = Σ y·g through batch_norm_inference; backward with training=False."""
    x = normal(shape, np.float64, seed=55, loc=-0.4)
    sshape = stat_shape(shape, norm_axis(axis, len(shape)))
    rng = np.random.default_rng(56)
    mean = rng.standard_normal(sshape)
    var = rng.random(sshape) + 0.2
    w = rng.standard_normal(sshape)
    b = rng.standard_normal(sshape)
    g = rng.standard_normal(shape)

    def loss():
        return float(np.sum(nbnorm.batch_norm_inference(x, mean, var, w, b, axis=axis,
                                                        eps=1e-3) * g))

    invstd = 1.0 / np.sqrt(var + 1e-3)
    grads = backend.back(nbnorm.batch_norm_backward(*backend.on(g, x, mean, invstd, w),
                                                    axis=axis, training=False))
    fd_check(loss, [x, w, b], grads)


def test_gradient_without_weight_is_unit_weight(backend):
    x = normal((6, 4), np.float64, seed=57)
    dy, w, mean, invstd = setup(x, 0, seed=5)
    args = backend.on(dy, x, mean, invstd)
    a = backend.back(nbnorm.batch_norm_backward(*args, axis=0))
    b = backend.back(nbnorm.batch_norm_backward(*args, backend.put(np.ones(4)), axis=0))
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-14, atol=1e-15)


def test_training_dx_sums_to_zero_and_is_orthogonal_to_xhat(backend):
    """With eps = 0, Σ dx = 0 and Σ dx·x̂ = 0 per statistic (y is invariant
    to shifts and scalings of x) — an identity independent of the reference."""
    x = normal(backend.fit((16, 5, 8, 8)), np.float64, seed=58, loc=3.0)
    dy, w, _, _ = setup(x, (0, 2, 3), seed=6)
    _, mean, invstd = nbnorm.batch_norm_forward(x, axis=(0, 2, 3), eps=0.0)
    dx = backend.get(nbnorm.batch_norm_backward(*backend.on(dy, x, mean, invstd, w),
                                                axis=(0, 2, 3))[0])
    xhat = (x - mean[:, None, None]) * invstd[:, None, None]
    s = np.abs(dx).sum(axis=(0, 2, 3))
    assert np.all(np.abs(dx.sum(axis=(0, 2, 3))) < 1e-12 * s)
    assert np.all(np.abs((dx * xhat).sum(axis=(0, 2, 3))) < 1e-12 * s * np.abs(xhat).max())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("layout", ["C", "channels-last", "F", "flipped"])
def test_frozen_backward_infinite_dy_and_x(layout, backend):
    """Frozen ``dx = dy·weight·invstd``: ±inf in ``dy`` stays ±inf, ±inf in ``x``
    is never read (no ``inf·0``)."""
    x = normal((4, 3, 5, 6), np.float32, seed=60, loc=1.0)
    dy = normal(x.shape, np.float32, seed=61)
    dy[1, 0, 2, 3], dy[2, 2, 0, 5] = np.inf, -np.inf
    mean, var = R.moments(x, (0, 2, 3))
    x[0, 1, 1, 1], x[3, 2, 4, 0] = np.inf, -np.inf
    invstd = (1 / np.sqrt(var + 1e-5)).astype(np.float32)
    mean = mean.astype(np.float32)
    w = np.array([0.5, -2.0, 1.5], np.float32)
    views = named_layouts(dy)[layout], named_layouts(x)[layout]
    dx = backend.get(nbnorm.batch_norm_backward(*backend.on(*views, mean, invstd, w),
                                                axis=(0, 2, 3), training=False)[0])
    want = dy.astype(np.float64) * (w * invstd).astype(np.float64)[:, None, None]
    assert dx[1, 0, 2, 3] == np.inf and dx[2, 2, 0, 5] == -np.inf      # w > 0 in both
    assert np.isfinite(dx).sum() == dx.size - 2
    fin = np.isfinite(want)
    assert_within(dx[fin], want[fin], 4 * eps(np.float32) * np.abs(want[fin]), "dx")
