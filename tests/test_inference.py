"""nbnorm.batch_norm_inference against the float64 reference, on every backend,
with the checks of ``checks.py``; its Hypothesis sweep is in ``test_sweep.py``."""
from __future__ import annotations

import numpy as np
import pytest

import nbnorm
from nbnorm import reference as R

from checks import check_inference
from helpers import (FLOATS, affine_bound, all_axis_subsets, assert_within, channels_last,
                     named_layouts, norm_axis, normal, stat_shape)


def stats(x, axis, seed, dtype=np.float32, kinds=("weight", "bias")):
    sshape = stat_shape(x.shape, norm_axis(axis, x.ndim))
    rng = np.random.default_rng(seed)
    mean = (rng.standard_normal(sshape) * 2).astype(dtype)
    var = (rng.random(sshape) * 3 + 0.1).astype(dtype)
    w = (rng.standard_normal(sshape)).astype(dtype) if "weight" in kinds else None
    b = (rng.standard_normal(sshape)).astype(dtype) if "bias" in kinds else None
    return mean, var, w, b


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_axis_subset_and_layout_of_4d(dtype, backend):
    x0 = normal((3, 4, 5, 6), dtype, seed=40, loc=0.5, scale=2.0)
    cases = [(x, ax) for x in named_layouts(x0).values()
             for ax in all_axis_subsets(4, include_empty=True)]
    for x, ax in backend.sample(cases, 4, salt=FLOATS.index(dtype)):
        check_inference(x, ax, *stats(x, ax, seed=len(ax)), bk=backend)


@pytest.mark.parametrize("stat_dtype", FLOATS)
def test_statistics_of_any_float_dtype(stat_dtype, backend):
    x = normal((4, 3, 5, 5), np.float32, seed=41)
    for xv in backend.sample((x, channels_last(x)), 1, salt=FLOATS.index(stat_dtype)):
        check_inference(xv, (0, 2, 3), *stats(x, (0, 2, 3), seed=1, dtype=stat_dtype),
                        bk=backend)


@pytest.mark.parametrize("shape,axis", [((2, 3, 200, 200), (0, 2, 3)), ((40000, 5), 0),
                                        ((20001, 8), 0), ((3001, 60), (0,))])
def test_large_chunked_paths(shape, axis, large_backend):
    x = normal(shape, np.float32, seed=42, loc=2.0)
    args = stats(x, axis, seed=3)
    check_inference(x, axis, *args, bk=large_backend)
    if len(shape) == 4:
        check_inference(channels_last(x), axis, *args, bk=large_backend)


@pytest.mark.parametrize("dtype", FLOATS)
def test_in_place(dtype, backend):
    x0 = normal((4, 3, 5, 6), dtype, seed=44, loc=-1.0)
    cases = [(name, ax) for name in named_layouts(x0) for ax in ((0, 2, 3), (1,), (3,), ())]
    for name, ax in backend.sample(cases, 2, salt=FLOATS.index(dtype)):
        x = named_layouts(x0)[name]
        check_inference(x, ax, *stats(x, ax, seed=5), out=x, bk=backend)


def test_float16_identity_is_exact_for_every_value(large_backend):
    """mean 0, var 1, eps 0, no affine: y == x for all 63488 finite halves
    (subnormals included) and NaN propagated."""
    x = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)
    bk = large_backend
    y = bk.get(nbnorm.batch_norm_inference(*bk.on(x, np.zeros(256), np.ones(256)), axis=0,
                                           eps=0.0))
    fin = np.isfinite(x)
    np.testing.assert_array_equal(y[fin], x[fin])
    assert np.isnan(y[np.isnan(x)]).all()


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_infinite_inputs_stay_infinite(dtype, layout, backend):
    """(±inf − mean)·invstd·w + b = ±inf·sign(w) for finite statistics."""
    x = np.array([[np.inf, 1.0], [2.0, -np.inf], [0.5, 3.0]], dtype)
    x = np.asfortranarray(x) if layout == "F" else x
    args = backend.on(x, np.array([0.5, -1.0]), np.array([2.0, 1.0]), np.array([1.0, -2.0]),
                      np.array([0.0, 1.0]))
    y = backend.get(nbnorm.batch_norm_inference(*args, axis=0))
    yr = R.batch_norm_inference(x, np.array([0.5, -1.0]), np.array([2.0, 1.0]),
                                np.array([1.0, -2.0]), np.array([0.0, 1.0]), axis=0)
    assert y[0, 0] == np.inf and y[1, 1] == np.inf
    assert_within(y, yr, affine_bound(x, (0,), yr, [0.5, -1.0], 1 / np.sqrt([2.0, 1.0]),
                                      np.array([1.0, -2.0]), np.array([0.0, 1.0])), "y")


@pytest.mark.parametrize("scale", [2.0**-3, 2.0**-13, 2.0**-20, 2.0**4, 1.0 / 3.0, 1.7])
def test_float16_rounding_to_nearest_even(scale, large_backend):
    """y = x·scale for every half x, compared bitwise with NumPy's rounding
    (subnormal results, overflow to inf and ties included).  For powers of
    two the product is exact before the final rounding."""
    x = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    x = x[np.isfinite(x)].reshape(-1, 1)
    bk = large_backend
    y = bk.get(nbnorm.batch_norm_inference(*bk.on(x, np.zeros(1), np.ones(1), np.array([scale])),
                                           axis=0, eps=0.0))
    exact = x.astype(np.float64) * scale
    if np.log2(scale) == np.round(np.log2(scale)):
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(y, exact.astype(np.float16))
    else:
        # one rounding of an inexact product: within one half-ulp plus the
        # float32 rounding of the product (2^-24 relative)
        with np.errstate(over="ignore"):
            ref = exact.astype(np.float16).astype(np.float64)
        fin = np.isfinite(ref)
        with np.errstate(over="ignore"):
            ulp = np.spacing(np.abs(ref[fin]).astype(np.float16)).astype(np.float64)
        assert (np.abs(y[fin] - exact[fin]) <= 0.5 * ulp * (1 + 2.0**-12)).all()


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_statistic_only_affects_its_channel(dtype, backend):
    x = normal((3, 4, 5), dtype, seed=43)
    mean, var, w, b = stats(x, (0, 2), seed=4)
    mean[1] = np.nan
    y = backend.get(nbnorm.batch_norm_inference(*backend.on(x, mean, var, w, b), axis=(0, 2)))
    assert np.isnan(y[:, 1]).all()
    assert np.isfinite(np.delete(y, 1, axis=1)).all()


def test_full_precision_mean(backend):
    """A float64 mean is subtracted in full precision from float32 data:
    3·10⁷ − (3·10⁷ + 0.25) is −0.25 exactly (a float32 mean would round to 3·10⁷)."""
    x = np.full((40, 3), 3e7, np.float32)
    args = backend.on(x, np.full(3, 3e7 + 0.25), np.ones(3))
    y = backend.get(nbnorm.batch_norm_inference(*args, axis=0, eps=0.0))
    np.testing.assert_array_equal(y, np.full((40, 3), -0.25, np.float32))
