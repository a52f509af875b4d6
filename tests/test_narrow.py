"""The elementwise map in float32 for float16/float32 data
(:func:`nbnorm._welford.narrow_coefficients`).

Against exact ``Fraction`` values of ``y = (x − mean)·α + bias``: where the
rule allows float32, ``y`` is within ``2⁻²²·(|(x − mean)·α| + |bias|)`` plus
its own rounding; where it does not (centres, scales or constants near the
ends of float32's range), ``y`` is as close as the float64 map's.  The
choice is made statistic by statistic: a statistic's ``y`` has the same
bits whatever the other statistics hold, in every layout the elementwise
pass walks (one coefficient set per run, per-element coefficients,
in place).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nbnorm
from nbnorm import _welford

F32 = np.float32
EPS32 = Fraction(2) ** -23
MAGNITUDES = [0.0, 1e-40, 1e-30, 1e-20, 1e-3, 1.0, 3.0, 1e4, 1e18, 2.0 ** 64, 1e20, 1e30,
              3e38]


def _exact_alpha(var, eps, w):
    """α as the kernels compute it (float64, then exact from there)."""
    return Fraction(float(_welford.forward_scale(_welford.invstd_of(float(var), eps),
                                                 float(w))))


def _signed(draw, values):
    return float(draw(st.sampled_from(values))) * draw(st.sampled_from([1.0, -1.0]))


@st.composite
def inference_cases(draw):
    mean = _signed(draw, MAGNITUDES)
    var = abs(_signed(draw, [1e-30, 1e-3, 1.0, 9.0, 1e8, 1e30, 1e38]))
    w = _signed(draw, [0.0, 1e-30, 0.5, 1.0, 3.0, 1e20])
    b = _signed(draw, MAGNITUDES)
    spread = abs(_signed(draw, [1e-3, 1.0, 1e4, 1e20, 1e38]))
    units = draw(st.lists(st.floats(-1, 1), min_size=1, max_size=40))
    with np.errstate(over="ignore"):
        x = (np.float64(mean) + np.array(units) * spread).astype(F32)
    return np.where(np.isfinite(x), x, F32(0)), F32(mean), F32(var), F32(w), F32(b)


@settings(max_examples=60, deadline=None)
@given(inference_cases())
def test_float32_map_is_within_its_bound(case):
    x, mean, var, w, b = case
    ok = _welford.narrow_coefficients(float(mean), float(_exact_alpha(var, 0.0, w)),
                                      0.0, 0.0, float(b), False)[0]
    y = nbnorm.batch_norm_inference(x[:, None], np.array([mean]), np.array([var]),
                                    np.array([w]), np.array([b]), axis=0, eps=0.0)[:, 0]
    alpha = _exact_alpha(var, 0.0, w)
    for xi, yi in zip(x, y):
        t = (Fraction(float(xi)) - Fraction(float(mean))) * alpha
        exact = t + Fraction(float(b))
        if abs(exact) > Fraction(float(np.finfo(F32).max)):
            continue                                   # overflows float32 either way
        half_ulp = Fraction(float(np.spacing(F32(abs(float(exact)))))) / 2
        if ok:
            bound = 2 * EPS32 * (abs(t) + abs(Fraction(float(b)))) + half_ulp
        else:   # the float64 map, then rounded to float32
            bound = Fraction(2) ** -50 * (abs(t) + abs(Fraction(float(b)))) + half_ulp
        assert np.isfinite(yi), (xi, yi, case, ok)
        assert abs(Fraction(float(yi)) - exact) <= bound, (xi, yi, float(exact), case, ok)


def test_the_rule_refuses_what_float32_cannot_hold():
    n = _welford.narrow_coefficients
    assert n(1e4, 0.5, 0.0, 0.0, 1.0, False)[0]
    assert n(0.0, 0.0, 0.0, 0.0, 0.0, False)[0]              # a zero scale is exact
    assert not n(1e30, 1e-30, 0.0, 0.0, 0.0, False)[0]        # u − cu could overflow
    assert not n(1.0, 1e-30, 0.0, 0.0, 0.0, False)[0]         # the scale loses bits
    assert not n(1.0, 1e30, 0.0, 0.0, 0.0, False)[0]
    assert not n(1.0, 1e-50, 0.0, 0.0, 0.0, False)[0]         # a scale float32 rounds to 0
    assert not n(1.0, 1.0, 0.0, 0.0, 1e30, False)[0]          # the constant
    assert not n(1.0, 1.0, 1e30, 1.0, 0.0, True)[0]           # the second centre
    assert n(1.0, 1.0, 1e30, 1.0, 0.0, False)[0]              # ... only with v
    nan = float("nan")
    # a NaN coefficient makes every output NaN in either map: float32 allowed
    for args in ((nan, 1.0, 0.0, 0.0, 0.0, False), (1.0, nan, 0.0, 0.0, 0.0, False),
                 (1.0, 1.0, 0.0, 0.0, nan, False), (1.0, 1.0, nan, 0.0, 0.0, True),
                 (1.0, 1.0, 0.0, nan, 0.0, True), (nan, 0.0, 0.0, 0.0, 0.0, False)):
        assert n(*args)[0], args
    assert not n(1e30, 1e-30, nan, 0.0, 0.0, False)[0]        # a NaN v-centre without v
    ok, u32, a32, _, _, c32 = n(1.0 + 2.0 ** -30, 3.0, 0.0, 0.0, 0.5, False)
    assert ok and u32 == 1.0 and a32 == 3.0
    # the centre's rounding moves into the constant: 0.5 − 2⁻³⁰·3, rounded
    assert c32 == F32(0.5 - 3 * 2.0 ** -30)


LAYOUTS = {
    "nchw": lambda a: a,
    "channels-last": lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
    "reversed": lambda a: np.flip(np.ascontiguousarray(np.flip(a, 1)), 1),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("in_place", [False, True])
def test_each_statistic_chooses_its_arithmetic_alone(dtype, layout, in_place):
    """Channel 1 needs float64 (float32: its mean near float32's top;
    float16: its weight, hence its scale, beyond 2⁶⁴); the other channels' outputs are bitwise
    those of a call on them alone (all float32): inference, and the pass
    with two inputs (the backward's ``dx = dy·a + (x − mean)·b + c``)."""
    rng = np.random.default_rng(3)
    mean = np.array([1.0, 2e38, 1.0, -1.0, 0.5])
    var = np.array([4.0, 1e30, 4.0, 1.0, 9.0])
    w = np.array([1.0, 2.0, -1.5, 0.5, 3.0], np.float32)
    if dtype == np.float16:
        mean[1], var[1], w[1] = 3.0, 1.0, 1e20
    x = rng.standard_normal((4, 5, 3, 7)) * 2 + 1
    x[:, 1] = mean[1] + rng.standard_normal((4, 3, 7)) * var[1] ** 0.5
    x = LAYOUTS[layout](x.astype(dtype))
    mean, var = mean.astype(np.float32), var.astype(np.float32)
    b = np.array([0.0, 1.0, -2.0, 4.0, 0.25], np.float32)
    alpha = [float(_exact_alpha(v, 1e-5, c)) for v, c in zip(var, w)]
    refused = [not _welford.narrow_coefficients(float(m), a, 0.0, 0.0, float(c), False)[0]
               for m, a, c in zip(mean, alpha, b)]
    assert refused == [False, True, False, False, False]
    keep = [0, 2, 3, 4]
    xs = LAYOUTS[layout](np.ascontiguousarray(x[:, keep]))
    target = x.copy(order="K") if in_place else None
    y = nbnorm.batch_norm_inference(x if target is None else target, mean, var, w, b,
                                    axis=(0, 2, 3), out=target)
    alone = nbnorm.batch_norm_inference(xs, mean[keep], var[keep], w[keep], b[keep],
                                        axis=(0, 2, 3))
    np.testing.assert_array_equal(y[:, keep], alone)
    if dtype == np.float32:
        assert np.isfinite(y[:, 1]).all()

    from nbnorm._cpu.passes import _affine    # the pass with two inputs, coefficients given
    dy = LAYOUTS[layout](rng.standard_normal(x.shape).astype(dtype))
    a = np.array(alpha)
    cb = -np.array([0.3, 1e-20, 0.2, -0.1, 0.05])
    cc = np.array([0.5, -1.0, 0.25, 2.0, -3.0])
    zero = np.zeros(5)
    mu = mean.astype(np.float64)
    dx = dy.copy(order="K") if in_place else np.empty_like(dy)
    _affine(dx, dy if not in_place else dx, x, (0, 2, 3), zero, a, mu, cb, cc)
    dys = LAYOUTS[layout](np.ascontiguousarray(dy[:, keep]))
    dx_alone = np.empty_like(dys)
    _affine(dx_alone, dys, xs, (0, 2, 3), zero[keep], a[keep], mu[keep], cb[keep], cc[keep])
    np.testing.assert_array_equal(dx[:, keep], dx_alone)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_statistics_of_nan_take_the_float32_map(dtype, layout):
    """A statistic whose mean or variance is NaN (a channel of NaN values:
    a land pixel) gives NaN everywhere, and the other statistics' outputs
    are bitwise those of a call on them alone — also where one of them
    needs float64 (channel 1), so the NaN statistic neither forces nor
    hides a choice of arithmetic."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 1).astype(dtype)
    x = LAYOUTS[layout](x)
    mean = np.array([1.0, 1.0, np.nan, -1.0], np.float32)
    var = np.array([4.0, 4.0, 1.0, np.nan], np.float32)
    w = np.array([1.0, 1e30 if dtype == np.float32 else 1e20, 1.0, 2.0], np.float32)
    b = np.array([0.5, 0.0, 0.0, -1.0], np.float32)
    y = nbnorm.batch_norm_inference(x, mean, var, w, b, axis=(0, 2, 3))
    assert np.isnan(y[:, 2:]).all()
    keep = [0, 1]
    xs = LAYOUTS[layout](np.ascontiguousarray(x[:, keep]))
    alone = nbnorm.batch_norm_inference(xs, mean[keep], var[keep], w[keep], b[keep],
                                        axis=(0, 2, 3))
    np.testing.assert_array_equal(y[:, keep], alone)
