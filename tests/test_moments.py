"""nbnorm.moments against the float64 NumPy reference, on every backend, with the
checks of ``checks.py``; its Hypothesis sweep is in ``test_sweep.py``."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbnorm
from nbnorm import reference as R

from checks import check_moments
from helpers import (FLOATS, all_axis_subsets, assert_within, channels_last, moments_bound,
                     named_layouts, norm_axis, normal, relayout, stat_dtype, stat_shape)


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_axis_subset_and_layout_of_4d(dtype, backend):
    """Every axis subset (empty included) of a (3, 4, 5, 6) array, every
    layout; keepdims and ddof alternate."""
    x0 = normal((3, 4, 5, 6), dtype, seed=2, loc=2.0, scale=3.0)
    # (on the simulator, whose time grows with the number of statistics, the
    # empty subset — 360 statistics — is left to the size-one test below)
    cases = [(x, ax) for x in named_layouts(x0).values()
             for ax in all_axis_subsets(4, include_empty=not backend.small)]
    for i, (x, ax) in enumerate(backend.sample(cases, 4, salt=FLOATS.index(dtype))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # ddof=1 over ()
            mean, _ = check_moments(x, ax, ddof=int(i % 3 == 2), keepdims=i % 2 == 1, bk=backend)
        if i % 2 == 0:
            assert mean.shape == stat_shape(x.shape, ax)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(2, 1, 3, 1, 2), (1, 1), (2, 2, 2, 2, 2), (7,)])
def test_size_one_and_two_dims_all_subsets(shape, dtype, backend):
    x0 = normal(shape, dtype, seed=3)
    cases = [(x, ax) for x in (x0, np.asfortranarray(x0), relayout(x0, flip=(len(shape) - 1,)))
             for ax in all_axis_subsets(len(shape), include_empty=True)]
    for x, ax in backend.sample(cases, 1, salt=len(shape) + FLOATS.index(dtype)):
        check_moments(x, ax, bk=backend)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", [
    ((4, 2, 128, 130), (0, 2, 3)),     # NCHW, few channels: chunked reduction + merge
    ((3, 65, 700), (0, 2)),            # many statistics (one pass per statistic)
    ((40000, 3), 0),                   # kept innermost dim, chunked rows
    ((20001, 8), 0),                   # narrow kept rows read 16 at a time, odd remainder
    ((3001, 60), (0,)),                # 2 rows at a time
])
def test_chunked_paths(shape, axis, dtype, large_backend):
    x0 = normal(shape, dtype, seed=4, loc=3.0)
    check_moments(x0, axis, bk=large_backend)
    if len(shape) == 4:
        check_moments(channels_last(x0), axis, bk=large_backend)


def test_axis_none_negative_and_list_are_the_same_reduction():
    x = normal((3, 4, 5), np.float32, seed=5)
    ref = nbnorm.moments(x, (0, 1, 2))
    for spelled in (None, (-3, -2, -1), [2, 0, 1], (0, -2, 2)):
        got = nbnorm.moments(x, spelled)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(nbnorm.moments(x, -1)[1], nbnorm.moments(x, 2)[1])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_input_promoted_to_float64(dtype):
    rng = np.random.default_rng(6)
    x = (rng.integers(0, 100, (5, 6, 7)) if dtype != np.bool_ else rng.random((5, 6, 7)) > 0.3)
    x = x.astype(dtype)
    for ax in ((0,), (1, 2), None):
        mean, var = nbnorm.moments(x, ax)
        assert mean.dtype == np.float64 and var.dtype == np.float64
        np.testing.assert_allclose(mean, np.mean(x, axis=ax), rtol=1e-14)
        np.testing.assert_allclose(var, np.var(x, axis=ax), rtol=1e-13, atol=1e-13)


def test_array_like_input():
    mean, var = nbnorm.moments([[1.0, 2.0], [3.0, 5.0]], 0)
    np.testing.assert_allclose(mean, [2.0, 3.5])
    np.testing.assert_allclose(var, [1.0, 2.25])


def test_zero_dim_input_and_empty_axis():
    mean, var = nbnorm.moments(np.float64(3.5))
    assert mean.shape == () and mean == 3.5 and var == 0.0
    x = normal((2, 3), np.float32, seed=7)
    mean, var = nbnorm.moments(x, ())
    np.testing.assert_array_equal(mean, x)
    np.testing.assert_array_equal(var, np.zeros((2, 3)))


@pytest.mark.parametrize("ddof", [1, 2, 0.5])
def test_ddof_matches_numpy(ddof, backend):
    x = normal((6, 5), np.float64, seed=8, loc=1.0)
    var = backend.get(nbnorm.moments(backend.put(x), 0, ddof=ddof)[1])
    np.testing.assert_allclose(var, np.var(x, axis=0, ddof=ddof), rtol=1e-13)


def test_ddof_at_least_n_warns_and_matches_numpy(backend):
    x = normal((2, 3), np.float64, seed=9)
    x[:, 2] = 1.0
    with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        var = backend.get(nbnorm.moments(backend.put(x), 0, ddof=2)[1])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(var, np.var(x, axis=0, ddof=2))   # inf, inf, nan


@pytest.mark.parametrize("shape,axis", [((0, 3), 0), ((2, 0, 3), (0, 1)), ((0,), None)])
def test_empty_reduction_is_nan_with_warning(shape, axis):
    x = np.zeros(shape, np.float32)
    with pytest.warns(RuntimeWarning, match="empty"):
        mean, var = nbnorm.moments(x, axis)
    assert mean.shape == stat_shape(shape, norm_axis(axis, len(shape)))
    assert mean.dtype == np.float32 and mean.shape == var.shape
    assert np.isnan(mean).all() and np.isnan(var).all()


def test_empty_statistic_shape_gives_empty_result_without_warning():
    x = np.zeros((4, 0), np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, var = nbnorm.moments(x, 0)
    assert mean.shape == (0,) and var.shape == (0,)


# ------------------------------------------------------------- adversarial
def test_offset_1e4_float32_variance_is_accurate(backend):
    """float32 data of mean 1e4 and unit variance.

    The naive E[x²] − E[x]² in float32 would need E[x²] ≈ 1e8 to absolute
    accuracy 1e-3 but float32 spacing at 1e8 is 8: its result is garbage
    (asserted below); the shifted/Welford kernels keep a relative error
    well under 1e-3.
    """
    x = normal(backend.fit((8, 4, 32, 32), 1000), np.float32, seed=10, loc=1e4)
    for xv in backend.sample((x, channels_last(x)), 1):
        mean, var = check_moments(xv, (0, 2, 3), bk=backend)
        mr, vr = R.moments(xv, (0, 2, 3))
        assert np.max(np.abs(var - vr) / vr) < 1e-3
        assert np.max(np.abs(mean - mr)) < 1e-3 * np.sqrt(vr).max()
    xs = x.transpose(1, 0, 2, 3).reshape(4, -1)
    naive = (xs * xs).mean(axis=1, dtype=np.float32) - xs.mean(axis=1, dtype=np.float32) ** 2
    assert np.max(np.abs(naive - vr) / vr) > 1e-1, "naive formula unexpectedly accurate"


def test_offset_1e8_float64_variance_is_accurate(backend):
    """float64 data of mean 1e8 and unit variance: the naive formula would
    cancel ~1e16 against 1e16 (spacing 2) and lose every digit."""
    x = normal(backend.fit((6, 3, 40, 40)), np.float64, seed=11, loc=1e8)
    for xv in backend.sample(named_layouts(x).values(), 2):
        var = backend.get(nbnorm.moments(backend.put(xv), (0, 2, 3))[1])
        vr = np.var(xv, axis=(0, 2, 3))
        assert np.max(np.abs(var - vr) / vr) < 1e-6
    xs = x.transpose(1, 0, 2, 3).reshape(3, -1)
    naive = (xs * xs).mean(axis=1) - xs.mean(axis=1) ** 2
    assert np.max(np.abs(naive - vr) / vr) > 1e-1, "naive formula unexpectedly accurate"


@pytest.mark.parametrize("dtype", FLOATS)
def test_constant_channels_with_large_values_have_zero_variance(dtype, backend):
    big = {np.float16: 60000.0, np.float32: 3.0e7, np.float64: 1.0e15}[dtype]
    shape = backend.fit((5, 3, 7, 9))
    x = np.empty(shape, dtype)
    x[:, 0] = big
    x[:, 1] = -big / 3
    x[:, 2] = normal(shape[:1] + shape[2:], dtype, seed=12)
    for xv in backend.sample(named_layouts(x).values(), 2, salt=FLOATS.index(dtype)):
        mean, var = backend.back(nbnorm.moments(backend.put(xv), (0, 2, 3)))
        assert var[0] == 0.0 and var[1] == 0.0
        assert mean[0] == np.float64(x[0, 0, 0, 0]) and mean[1] == np.float64(x[0, 1, 0, 0])


def test_float16_near_max_does_not_overflow(backend):
    """Squares of float16 values near 65504 overflow float16, not the accumulators."""
    x = np.array([[65504.0, -65504.0, 60000.0, -1000.0]] * 3, np.float16).T.copy()
    check_moments(x, 0, bk=backend)
    check_moments(np.ascontiguousarray(x.T), 1, bk=backend)


@pytest.mark.parametrize("dtype", FLOATS)
def test_two_element_reductions(dtype, backend):
    x = np.array([[1.0, 3.0], [-2.0, 2.5], [7.0, 7.0]], dtype)
    mean, var = backend.back(nbnorm.moments(backend.put(x), 1))
    np.testing.assert_array_equal(mean, np.array([2.0, 0.25, 7.0], stat_dtype(dtype)))
    np.testing.assert_array_equal(var, np.array([1.0, 5.0625, 0.0], stat_dtype(dtype)))
    mean, var = backend.back(nbnorm.moments(backend.put(x.T), 0))   # kept dim innermost
    np.testing.assert_array_equal(var, np.array([1.0, 5.0625, 0.0], stat_dtype(dtype)))


@pytest.mark.parametrize("layout", ["C", "F", "channels-last"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_only_affect_their_statistic(bad, layout, backend):
    x = normal(backend.fit((4, 5, 6, 7)), np.float32, seed=13)
    x[2, 3, 1, -1] = bad
    xv = named_layouts(x)[layout]
    mean, var = backend.back(nbnorm.moments(backend.put(xv), (0, 2, 3)))
    mr, vr = R.moments(x, (0, 2, 3))
    assert not np.isfinite(mean[3]) and np.isnan(var[3])
    ok = np.arange(5) != 3
    assert_within(mean[ok], mr[ok], moments_bound(x, (0, 2, 3), mr, vr)[0][ok], "mean")
    assert_within(var[ok], vr[ok], moments_bound(x, (0, 2, 3), mr, vr)[1][ok], "var")


@pytest.mark.parametrize("layout", ["C", "channels-last"])
def test_infinite_values_give_infinite_mean_as_numpy(layout, backend):
    """mean of data holding +inf (and no NaN or −inf) is +inf, as in NumPy."""
    x = normal(backend.fit((4, 5, 6, 7)), np.float32, seed=14)
    x[1, 1, 2, -1] = np.inf
    x[0, 2, 0, 0] = -np.inf
    xv = named_layouts(x)[layout]
    mean, var = backend.back(nbnorm.moments(backend.put(xv), (0, 2, 3)))
    assert mean[1] == np.inf and mean[2] == -np.inf
    assert np.isnan(var[1]) and np.isnan(var[2])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((5, 300), 1), ((300, 5), 0), ((4, 5, 60), (0, 2))])
def test_non_finite_values_meet_finite_ones_in_every_merge(shape, axis, dtype, backend):
    """+inf alone gives mean +inf (−inf: −inf), both or a NaN give NaN; var is NaN.

    The infinities sit first, in the middle and last of a statistic's data,
    so they meet finite values in every merge (per thread, warp, block,
    chunk on CUDA; per block and chunk on the CPU).
    """
    x = normal(shape, dtype, seed=17)
    ax = (axis,) if isinstance(axis, int) else axis
    view = np.moveaxis(x, ax, tuple(range(len(ax))))
    moved = view.reshape(-1, 5).copy()          # (n, statistic)
    n = moved.shape[0]
    moved[0, 0] = np.inf                       # statistic 0: +inf first
    moved[n // 2, 1] = np.inf                  # statistic 1: +inf in the middle, twice
    moved[n // 2 + 1, 1] = np.inf
    moved[n - 1, 2] = -np.inf                  # statistic 2: −inf last
    moved[1, 3] = np.inf                       # statistic 3: +inf and −inf
    moved[n - 2, 3] = -np.inf
    moved[n // 3, 4] = np.nan                  # statistic 4: NaN
    view[...] = moved.reshape(view.shape)
    assert np.isinf(x).sum() == 6
    mean, var = backend.back(nbnorm.moments(backend.put(x), axis=axis))
    mean, var = mean.reshape(-1), var.reshape(-1)
    np.testing.assert_array_equal(mean, [np.inf, np.inf, -np.inf, np.nan, np.nan])
    assert np.isnan(var).all()
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(mean, np.mean(x, axis=axis).reshape(-1))


# ------------------------------------------------------------- large
@pytest.mark.slow
def test_twelve_million_float32_with_offset_axis_none(large_backend):
    x = normal(12_000_000, np.float32, seed=15, loc=1e3)
    mean, var = large_backend.back(nbnorm.moments(large_backend.put(x)))
    xd = x.astype(np.float64)
    mr = xd.mean()
    vr = np.mean((xd - mr) ** 2)
    # float32 results: their own rounding (eps·|mean|) plus 1e-5 of a std
    assert abs(mean - mr) < np.finfo(np.float32).eps * abs(mr) + 1e-5 * np.sqrt(vr)
    assert abs(var - vr) / vr < 1e-5


@pytest.mark.slow
def test_two_rows_of_six_million_axis_1_and_column_view(large_backend):
    bk = large_backend
    x = normal((2, 6_000_000), np.float32, seed=16, loc=-500.0, scale=2.0)
    mean, var = bk.back(nbnorm.moments(bk.put(x), 1))
    xd = x.astype(np.float64)
    mr = xd.mean(axis=1)
    vr = ((xd - mr[:, None]) ** 2).mean(axis=1)
    atol = np.finfo(np.float32).eps * 500 + 1e-5 * np.sqrt(vr).max()
    np.testing.assert_allclose(mean, mr, rtol=0, atol=atol)
    np.testing.assert_allclose(var, vr, rtol=1e-5)
    # the same memory seen as (6e6, 2) reduced over axis 0: kept dim innermost
    mean_t, var_t = bk.back(nbnorm.moments(bk.put(x.T), 0))
    np.testing.assert_allclose(var_t, vr, rtol=1e-5)
    np.testing.assert_allclose(mean_t, mr, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_drifting_channels_last_columns_stay_exact(dtype, large_backend):
    """Channels-last blocks are summed about the running mean; columns that
    drift by 10⁶ over the reduction, with an outlier first row, move the
    block mean many standard deviations from that shift.  The variance must
    still match the float64 reference (E[x²]−E[x]² would be off by ~10⁻²
    in float32 here)."""
    rng = np.random.default_rng(7)
    n = 200_000
    x = (np.linspace(0.0, 1e6, n)[:, None] + rng.standard_normal((n, 8))).astype(dtype)
    x[0] = 1e7
    m, v = large_backend.back(nbnorm.moments(large_backend.put(x), axis=0))
    rm, rv = R.moments(x, axis=0)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert np.max(np.abs(m - rm)) / np.max(np.abs(rm)) < tol
    assert np.max(np.abs(v - rv)) / np.max(rv) < tol


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kind", ["normal", "offset", "constant", "signed zeros", "huge",
                                  "non-finite", "subnormal"])
@pytest.mark.parametrize("n", [2, 255, 4096])
def test_every_path_gives_a_statistic_of_one_run_the_same_bits(n, kind, dtype):
    """A statistic that is one unit-stride run of at most ``BLOCK`` values
    (rows, per-channel spatial statistics) is summed whole, without the
    block walk (``_ranges.run_moments``); the walk takes such a range there
    too.  So ``moments``, batch norm (fused with ≥ 64 statistics, unfused
    with fewer), layer norm and layer norm into a strided ``out`` (whose
    statistics take the walk) give the same bits — means, signed zeros,
    infinities and NaNs — and the moments are within the bounds of the
    float64 reference."""
    rng = np.random.default_rng(n)
    big = float(np.finfo(dtype).max) / 4
    for rows in (3, 70):
        shape = (rows, n)
        x = {"normal": lambda: rng.standard_normal(shape) * 3,
             "offset": lambda: rng.standard_normal(shape) * 0.01 + 300.0,
             "constant": lambda: np.full(shape, 7.25),
             "signed zeros": lambda: np.where(rng.random(shape) < 0.5, -0.0, 0.0),
             "huge": lambda: rng.choice([big, -big, big / 2], shape),
             "non-finite": lambda: np.where(rng.random(shape) < 0.1, np.inf, rng.random(shape)),
             "subnormal": lambda: rng.random(shape) * float(np.finfo(dtype).smallest_subnormal) * 8,
             }[kind]().astype(dtype)
        if kind == "non-finite":
            x[1, n // 2] = np.nan
            x[2, -1] = -np.inf
        mean, var = nbnorm.moments(x, 1)
        _, bm, _ = nbnorm.batch_norm_forward(x, axis=1)
        _, lm, _ = nbnorm.layer_norm(x, axis=1)
        out = np.empty((rows, 2 * n), dtype)[:, ::2]
        _, sm, _ = nbnorm.layer_norm(x, axis=1, out=out)
        for other in (bm, lm, sm):
            np.testing.assert_array_equal(np.signbit(other), np.signbit(mean))
            np.testing.assert_array_equal(other, mean)
        if kind in ("normal", "offset", "constant"):
            mref, vref = R.moments(x, 1)
            mb, vb = moments_bound(x, 1, mref, vref)
            assert_within(mean, mref, mb, "mean")
            assert_within(var, vref, vb, "var")
