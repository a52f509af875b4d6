"""nbnorm.batch_norm_forward (training) against the float64 reference, on every
backend, with the checks of ``checks.py``; its Hypothesis sweep is in
``test_sweep.py``."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbnorm
from nbnorm import reference as R

from checks import check_forward, params
from helpers import (CPU, FLOATS, affine_bound, all_axis_subsets, assert_within, channels_last,
                     eps, moments_bound, named_layouts, norm_axis, normal, relayout, stat_dtype,
                     stat_shape)


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_axis_subset_and_layout_of_4d(dtype, backend):
    x0 = normal((3, 4, 5, 6), dtype, seed=20, loc=1.5, scale=2.0)
    cases = [(x, ax) for x in named_layouts(x0).values() for ax in all_axis_subsets(4)]
    for x, ax in backend.sample(cases, 4, salt=FLOATS.index(dtype)):
        w, b = params(x, ax, seed=len(ax))
        check_forward(x, ax, w, b, bk=backend)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", [
    ((8, 1, 128, 128), (0, 2, 3)),    # C=1: one statistic, chunked + merged
    ((4, 6, 128, 130), (0, 2, 3)),    # C=6: chunked + merged
    ((4, 80, 20, 20), (0, 2, 3)),     # many channels: fused one-pass kernel
    ((50000, 3), 0),                  # kept innermost dim, chunked rows
    ((20001, 8), 0),                  # narrow kept rows read 16 at a time, odd remainder
    ((3001, 60), (0,)),               # 2 rows at a time
])
def test_chunked_fused_and_channels_last_paths(shape, axis, dtype, large_backend):
    backend = large_backend
    x0 = normal(shape, dtype, seed=21, loc=-2.0, scale=1.5)
    w, b = params(x0, axis, seed=22)
    check_forward(x0, axis, w, b, bk=backend)
    if len(shape) == 4:
        check_forward(channels_last(x0), axis, w, b, bk=backend)


@pytest.mark.parametrize("dtype", FLOATS)
def test_in_place_on_every_path(dtype, backend):
    cases = []
    for shape, axis in [((2, 3, 64, 300), (0, 2, 3)), ((2, 70, 8, 8), (0, 2, 3)), ((30000, 4), 0)]:
        x0 = normal(backend.fit(shape), dtype, seed=23, loc=1.0)
        cases += [(x0.copy(), axis), (relayout(x0, perm=tuple(reversed(range(len(shape))))), axis)]
    for xv, axis in backend.sample(cases, 2, salt=FLOATS.index(dtype)):
        check_forward(xv, axis, out=xv, bk=backend)        # y is (on the backend) xv


# ------------------------------------------------------------ running stats
def check_running(x, axis, momentum, rdtype, seed=0, bk=CPU):
    ax = norm_axis(axis, x.ndim)
    sshape = stat_shape(x.shape, ax)
    rng = np.random.default_rng(seed)
    rm = rng.standard_normal(sshape).astype(rdtype)
    rv = rng.random(sshape).astype(rdtype) + 0.5
    rm_ref, rv_ref = rm.astype(np.float64), rv.astype(np.float64)
    xd, rmd, rvd = bk.on(x, rm, rv)
    nbnorm.batch_norm_forward(xd, axis=ax, running_mean=rmd, running_var=rvd, momentum=momentum)
    rm, rv = bk.back((rmd, rvd))
    R.batch_norm_forward(x, axis=ax, running_mean=rm_ref, running_var=rv_ref, momentum=momentum)
    assert rm.dtype == rdtype and rv.dtype == rdtype
    n = int(np.prod([x.shape[d] for d in ax]))
    mr, vr = R.moments(x, ax)
    mb, vb = moments_bound(x, ax, mr, vr)
    er = eps(rdtype)
    # the batch statistics' own error enters times momentum; the update itself
    # rounds once or twice in the running stats' dtype
    assert_within(rm, rm_ref, 2 * er * (np.abs(rm_ref) + 1) + momentum * mb, "running_mean")
    assert_within(rv, rv_ref, 2 * er * np.abs(rv_ref) + momentum * vb * n / (n - 1), "running_var")
    return rm, rv


@pytest.mark.parametrize("rdtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0, 0.37])
def test_running_stats_match_reference(momentum, rdtype, backend):
    cases = []
    for dtype in FLOATS:
        x = normal((6, 5, 4, 3), dtype, seed=24, loc=0.7, scale=1.3)
        cases += [(x, (0, 2, 3)), (channels_last(x), (0, 2, 3)), (x, (1,))]
    for xv, ax in backend.sample(cases, 1, salt=int(momentum * 100) + rdtype(0).itemsize):
        check_running(xv, ax, momentum, rdtype, bk=backend)


def test_running_stats_semantics_momentum_0_and_1(backend):
    """momentum=0 keeps the running stats; momentum=1 replaces them with the
    batch mean and the unbiased (n/(n − 1)) variance."""
    x = backend.put(np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]]))       # n = 3 per column
    rm, rv = backend.on(np.array([10.0, 20.0]), np.array([3.0, 4.0]))
    nbnorm.batch_norm_forward(x, axis=0, running_mean=rm, running_var=rv, momentum=0.0)
    np.testing.assert_array_equal(backend.get(rm), [10.0, 20.0])
    np.testing.assert_array_equal(backend.get(rv), [3.0, 4.0])
    nbnorm.batch_norm_forward(x, axis=0, running_mean=rm, running_var=rv, momentum=1.0)
    np.testing.assert_allclose(backend.get(rm), [3.0, 3.0], rtol=1e-15)
    np.testing.assert_allclose(backend.get(rv), [4.0, 7.0], rtol=1e-15)
    nbnorm.batch_norm_forward(x, axis=0, running_mean=rm, running_var=rv, momentum=0.25)
    np.testing.assert_allclose(backend.get(rm), [3.0, 3.0], rtol=1e-15)
    np.testing.assert_allclose(backend.get(rv), [4.0, 7.0], rtol=1e-15)


@pytest.mark.parametrize("rdtype", [np.float32, np.float64])
def test_running_stats_views_are_updated_in_place(rdtype, backend):
    x = normal((8, 3, 5), np.float32, seed=25)
    host = np.zeros((3, 4), rdtype)
    host[:, 3] = 1.0
    buf = backend.put(host)
    rm, rv = buf[::-1, 1], buf[:, 3]
    nbnorm.batch_norm_forward(backend.put(x), axis=(0, 2), running_mean=rm, running_var=rv,
                              momentum=0.5)
    buf = backend.get(buf)
    mr, vr = R.moments(x, (0, 2))
    np.testing.assert_allclose(buf[::-1, 1], 0.5 * mr, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(buf[:, 3], 0.5 + 0.5 * vr * 40 / 39, rtol=1e-6)
    np.testing.assert_array_equal(buf[:, [0, 2]], 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("layout", ["C", "channels-last"])
def test_non_finite_batch_leaves_its_running_entry(bad, layout, backend):
    """The CPU warns (RuntimeWarning naming the non-finite statistics); the
    CUDA backend guards the update on the device and does not warn, since a
    warning would need a device→host synchronization (documented)."""
    x = normal(backend.fit((4, 5, 6, 7)), np.float32, seed=26)
    x[1, 2, -1, -2] = bad
    xv = named_layouts(x)[layout]
    rm = np.arange(5, dtype=np.float32)
    rv = np.ones(5, np.float32) * 2
    rm0, rv0 = rm.copy(), rv.copy()
    xd, rmd, rvd = backend.on(xv, rm, rv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = nbnorm.batch_norm_forward(xd, axis=(0, 2, 3), running_mean=rmd, running_var=rvd)
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning)
            and "non-finite" in str(w.message)]
    assert len(ours) == (backend.name == "cpu"), [str(w.message) for w in caught]
    y, _, _ = backend.back(got)
    rm, rv = backend.back((rmd, rvd))
    assert rm[2] == rm0[2] and rv[2] == rv0[2]
    ok = np.arange(5) != 2
    n = x.size // 5
    mr, vr = R.moments(x, (0, 2, 3))
    np.testing.assert_allclose(rm[ok], 0.9 * rm0[ok] + 0.1 * mr[ok], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv[ok], 0.9 * rv0[ok] + 0.1 * vr[ok] * n / (n - 1), rtol=1e-5)
    # y: the affected channel is all NaN, the others are finite and correct
    assert np.isnan(y[:, 2]).all()
    assert np.isfinite(np.delete(y, 2, axis=1)).all()
    yr, _, ir = R.batch_norm_forward(np.delete(x, 2, axis=1), axis=(0, 2, 3))
    assert_within(np.delete(y, 2, axis=1), yr,
                  affine_bound(np.delete(x, 2, axis=1), (0, 2, 3), yr, mr[ok], ir, None, None,
                               n), "y")


def test_finite_batch_does_not_warn(backend):
    x = normal((4, 3, 5), np.float32, seed=27)
    args = backend.on(x, np.zeros(3, np.float32), np.ones(3, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nbnorm.batch_norm_forward(args[0], axis=(0, 2), running_mean=args[1],
                                  running_var=args[2])


# ------------------------------------------------------------- adversarial
@pytest.mark.parametrize("dtype,loc", [(np.float32, 1e4), (np.float64, 1e8)])
def test_large_offset_unit_variance(dtype, loc, backend):
    """Offset data where E[x²] − E[x]² cancels catastrophically (see
    test_moments): invstd stays accurate and y has unit variance."""
    x = normal(backend.fit((8, 3, 24, 24)), dtype, seed=28, loc=loc)
    tol = 1e-3 if dtype == np.float32 else 1e-6
    for xv in backend.sample(named_layouts(x).values(), 2, salt=int(loc)):
        y, mean, invstd = check_forward(xv, (0, 2, 3), bk=backend)
        vr = np.var(x.astype(np.float64), axis=(0, 2, 3))
        assert np.max(np.abs(invstd ** -2.0 - 1e-5 - vr) / vr) < tol
        yv = np.var(y.astype(np.float64), axis=(0, 2, 3))
        assert np.max(np.abs(yv - vr / (vr + 1e-5))) < tol


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (5, 70, 7, 9), (70000, 2, 1, 1)])
def test_constant_channels_with_large_values_normalize_to_exactly_bias(shape, dtype, backend):
    """x − mean is exactly 0 for a constant channel, so y must be exactly
    the bias (0 without one), however large the constant and however small
    var + eps — in training and, given those statistics, in inference."""
    big = {np.float16: 60000.0, np.float32: 3.0e7, np.float64: 1.0e15}[dtype]
    shape = backend.fit(shape)
    x = np.empty(shape, dtype)
    x[...] = (np.linspace(-big, big, shape[1]) if shape[1] > 2 else np.array([big, -big / 7])
              ).reshape(1, -1, 1, 1)
    sd = stat_dtype(dtype)
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2, shape[1]).astype(sd)
    b = rng.standard_normal(shape[1]).astype(sd)
    want = np.broadcast_to(b.astype(dtype).reshape(1, -1, 1, 1), shape)
    expect = (np.float64(1e-5) ** -0.5).astype(sd)
    layouts = [("C", x), ("channels-last", channels_last(x))]
    for name, xv in backend.sample(layouts, 1, salt=shape[1] + FLOATS.index(dtype)):
        xd, wd, bd = backend.on(xv, w, b)
        y, mean, invstd = backend.back(nbnorm.batch_norm_forward(xd, axis=(0, 2, 3)))
        assert (y == 0).all(), f"{name}: y = {np.unique(y)[:4]} instead of 0"
        np.testing.assert_array_equal(invstd, np.full(shape[1], expect))
        np.testing.assert_array_equal(mean, x[0, :, 0, 0].astype(sd))
        y = backend.get(nbnorm.batch_norm_forward(xd, wd, bd, axis=(0, 2, 3))[0])
        np.testing.assert_array_equal(y, want, err_msg=f"{name}: training with affine")
        md, vd = backend.on(mean, np.zeros_like(mean))
        y = backend.get(nbnorm.batch_norm_inference(xd, md, vd, wd, bd, axis=(0, 2, 3)))
        np.testing.assert_array_equal(y, want, err_msg=f"{name}: inference with affine")


@pytest.mark.parametrize("dtype", FLOATS)
def test_two_values_per_statistic(dtype, backend):
    """n = 2: mean halfway, biased var = (d/2)², y = ±|d|/√(d² + 4eps)."""
    x = np.array([[1.0, -3.0, 5.0], [3.0, 1.0, 5.0]], dtype)
    for xv in backend.sample((x, np.asfortranarray(x), x[::-1]), 1, salt=FLOATS.index(dtype)):
        y, mean, invstd = check_forward(xv, 0, eps_=0.0 if dtype != np.float16 else 1e-5,
                                        bk=backend)
        np.testing.assert_array_equal(mean, np.array([2.0, -1.0, 5.0], stat_dtype(dtype)))
    y = backend.get(nbnorm.batch_norm_forward(backend.put(x[:, :2]), axis=0, eps=0.0)[0])
    np.testing.assert_array_equal(np.abs(y), 1.0)


def test_single_statistic_over_all_axes(backend):
    x = normal((3, 1, 2, 2), np.float64, seed=29, loc=4.0)
    y, mean, invstd = check_forward(x, (0, 1, 2, 3), bk=backend)
    assert mean.shape == () and invstd.shape == ()


# ------------------------------------------------------------------ large
@pytest.mark.slow
@pytest.mark.parametrize("C", [1, 6])
def test_large_nchw_and_channels_last(C):
    """~1.2e7 float32 elements, few channels: the chunked reduction and the
    chunk merge run with many chunks per channel."""
    N = 12_000_000 // (C * 256 * 256) + 1
    x = normal((N, C, 256, 256), np.float32, seed=30, loc=100.0, scale=3.0)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, mean, invstd = nbnorm.batch_norm_forward(x, axis=(0, 2, 3), running_mean=rm,
                                                running_var=rv)
    xd = x.astype(np.float64)
    mr = xd.mean(axis=(0, 2, 3))
    vr = xd.var(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, mr, rtol=2 * eps(np.float32), atol=1e-5)
    np.testing.assert_allclose(invstd ** -2.0 - 1e-5, vr, rtol=1e-5)
    yr = (xd - mr[:, None, None]) / np.sqrt(vr[:, None, None] + 1e-5)
    assert np.max(np.abs(y - yr)) < 1e-4
    n = x.size // C
    np.testing.assert_allclose(rv, 0.9 + 0.1 * vr * n / (n - 1), rtol=1e-6)
    del y, yr, xd
    xl = channels_last(x)
    yl, mean_l, invstd_l = nbnorm.batch_norm_forward(xl, axis=(0, 2, 3))
    np.testing.assert_allclose(mean_l, mr, rtol=2 * eps(np.float32), atol=1e-5)
    np.testing.assert_allclose(invstd_l ** -2.0 - 1e-5, vr, rtol=1e-5)
