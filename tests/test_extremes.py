"""Statistics of finite values near the top of the floating-point range.

Sums about a pivot overflow there although the mean, and often the
variance, fit.  Against exact ``Fraction`` statistics, over rows of values
up to the dtype's maximum: every mean comes back finite and correct; the
variance is correct, or inf where the true variance (or ``M2 = n·var``,
carried in float64) exceeds the statistics' range, as NumPy's — never NaN; ``y`` is finite and correct wherever the
variance is.  For ``moments`` (also with ``skipna``), ``Moments``, batch
norm's training forward (fused and not), layer, RMS, group and instance norm.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nbnorm
from nbnorm._extremes import scaled_moments

DTYPES = [np.float16, np.float32, np.float64]


def _exact(row):
    vals = [Fraction(float(v)) for v in row]
    mean = sum(vals) / len(vals)
    return mean, sum((v - mean) ** 2 for v in vals) / len(vals)


def _check_mean(got, mean, row, stat_dtype):
    big = max(abs(float(v)) for v in row)
    assert math.isfinite(got), (got, row)
    tol = Fraction(4 * len(row)) * Fraction(float(np.finfo(stat_dtype).eps)) * Fraction(big)
    assert abs(Fraction(float(got)) - mean) <= tol, (got, float(mean), row)


def _check_var(got, var, row, stat_dtype):
    top = Fraction(float(np.finfo(stat_dtype).max))
    assert not math.isnan(got), (got, row)
    m2_top = Fraction(float(np.finfo(np.float64).max)) / len(row)   # M2 = n·var is float64
    if var > min(top, m2_top) * Fraction(99, 100):
        assert math.isinf(got) or abs(Fraction(float(got)) - var) <= var / 1000, (got, row)
        return
    assert math.isfinite(got), (got, float(var), row)
    big = max(abs(Fraction(float(v))) for v in row)
    tol = var * Fraction(float(np.finfo(stat_dtype).eps)) * 64 + \
        big * big * Fraction(float(np.finfo(stat_dtype).eps)) * 8 / len(row)
    assert abs(Fraction(float(got)) - var) <= tol, (got, float(var), row)


@st.composite
def rows(draw):
    dtype = draw(st.sampled_from(DTYPES))
    top = float(np.finfo(dtype).max)
    n = draw(st.integers(2, 12))
    scales = [top, top / 2, top / 3, top / 16, math.sqrt(top), math.sqrt(top) * 4, 1.0]
    units = st.sampled_from([1.0, -1.0, 0.5, -0.75, 0.999, 0.0, 1 / 3])
    row = [draw(units) * draw(st.sampled_from(scales)) for _ in range(n)]
    return np.array(row, dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(row=rows(), stats=st.sampled_from([1, 70]))
def test_moments_and_states_near_the_maximum(row, stats):
    x = np.tile(row, (stats, 1))           # 70 rows: the parallel/fused paths too
    mean, var = _exact(row)
    sd = np.float64 if row.dtype == np.float64 else np.float32
    for m, v in [nbnorm.moments(x, 1), nbnorm.moments(x, 1, skipna=True),
                 nbnorm.moments(np.ascontiguousarray(x.T), 0)]:
        _check_mean(float(m[-1]), mean, row, sd)
        _check_var(float(v[-1]), var, row, sd)
    state = nbnorm.Moments.of(x, 1)
    _check_mean(float(state.mean[-1]), mean, row, sd)
    _check_var(float(state.var()[-1]), var, row, np.float64 if sd == np.float64 else np.float32)
    half = nbnorm.Moments.of(x[:, : len(row) // 2], 1).merge(
        nbnorm.Moments.of(x[:, len(row) // 2:], 1))
    _check_mean(float(half.mean[-1]), mean, row, sd)
    assert not np.isnan(half.var()[-1])


def _float(q):
    try:
        return float(q)
    except OverflowError:
        return math.inf


def _check_y(y, row, mean, var, invstd):
    """``y`` against the exact one (eps 0; a constant row is 0/0: NaN, as in
    NumPy and PyTorch, see the "Errors" section of docs/guide/batch_norm.md)."""
    y = np.asarray(y, np.float64)
    if var == 0:
        return
    assert not np.isnan(y).any(), (y, row)
    if not math.isfinite(_float(var * len(row))):     # M2 beyond float64: var inf, y = bias
        return
    for got, v in zip(y, row):
        want = _float((Fraction(float(v)) - mean) / Fraction(math.sqrt(float(var))))
        tol = 2e-2 if row.dtype == np.float16 else 1e-4 if row.dtype == np.float32 else 1e-9
        assert abs(got - want) <= tol * max(1.0, abs(want)), (got, want, row)


@settings(max_examples=60, deadline=None)
@given(row=rows(), stats=st.sampled_from([1, 70]),
       op=st.sampled_from(["batch", "batch_out_x", "layer", "group", "instance", "rms"]))
def test_normalization_near_the_maximum(row, stats, op):
    n = len(row)
    mean, var = _exact(row)
    if op.startswith("batch"):
        x = np.ascontiguousarray(np.tile(row, (stats, 1)).T)      # (n, stats), axis 0
        if op == "batch_out_x":
            y, m, inv = nbnorm.batch_norm_forward(x, axis=0, eps=0.0, out=x)
        else:
            y, m, inv = nbnorm.batch_norm_forward(x, axis=0, eps=0.0)
        y_row = y[:, -1]
    else:
        x = np.tile(row, (stats, 1)).reshape(stats, 1, n)
        if op == "layer":
            y, m, inv = nbnorm.layer_norm(x, eps=0.0)
        elif op == "group":
            y, m, inv = nbnorm.group_norm(x, 1, eps=0.0)
        elif op == "instance":
            y, m, inv = nbnorm.instance_norm(x, eps=0.0)
        else:
            y, inv = nbnorm.rms_norm(x, eps=0.0)
            sq = sum(Fraction(float(v)) ** 2 for v in row) / n
            assert not np.isnan(inv).any()
            if _float(sq) < float(np.finfo(np.float32).max) and sq > 0:
                r = 1 / math.sqrt(float(sq))
                assert abs(float(inv.reshape(-1)[-1]) - r) <= 1e-5 * r
                assert not np.isnan(y).any()
            return
        y_row = y.reshape(stats, n)[-1]
    sd = np.float64 if row.dtype == np.float64 else np.float32
    _check_mean(float(np.asarray(m).reshape(-1)[-1]), mean, row, sd)
    assert not np.isnan(inv).any()
    _check_y(y_row, row, mean, var, inv)


@pytest.mark.parametrize("row, dtype, mean", [([1e308, 0, 0], np.float64, 1e308 / 3),
                                              ([2e38, -2e38], np.float32, 0.0),
                                              ([65504, -65504, 65504], np.float16, 65504 / 3)])
def test_issue_examples(row, dtype, mean):
    m, v = nbnorm.moments(np.array(row, dtype))
    assert np.isclose(float(m), mean, rtol=1e-6)
    assert not np.isnan(v)


def test_scaled_moments_is_exact_where_float64_is():
    rng = np.random.default_rng(3)
    v = rng.standard_normal(1000) * 1e300
    n, mean, m2 = scaled_moments(v)
    assert n == 1000 and np.isclose(mean, v.mean(), rtol=1e-12, atol=1e288)
    assert math.isinf(m2)                  # Σ(x − mean)² ≈ 1e603: beyond float64
    n, mean, m2 = scaled_moments(v / 1e160)
    assert np.isclose(m2, ((v / 1e160 - mean) ** 2).sum(), rtol=1e-12)
    assert scaled_moments([np.nan, 1.0, 3.0], skipna=True) == (2, 2.0, 2.0)
    assert math.isinf(scaled_moments([np.inf, 1.0])[1])


ROWS = [([1e308, 0, 0], np.float64), ([2e38, -2e38], np.float32),
        ([1.9e19, -1.9e19] + [0.0] * 30, np.float32), ([1e308, -1e308, 0.0, 5.0], np.float64),
        ([1.7e308, 1.7e308, -1.7e308], np.float64), ([65504, -65504, 65504], np.float16),
        ([3.4e38, 3.4e38, 3.4e38], np.float32), ([1e154, -1e154, 3.0], np.float64)]
OPS = ["moments", "skipna", "state", "forward", "layer_norm", "rms_norm"]


@pytest.mark.parametrize("case", range(len(ROWS)))
def test_every_backend_near_the_maximum(case, backend):
    """The same rows on each backend (CUDA: the finalizing kernel recomputes
    an overflowed statistic from ``x``)."""
    row = np.array(ROWS[case][0], ROWS[case][1])
    mean, var = _exact(row)
    sd = np.float64 if row.dtype == np.float64 else np.float32
    x2 = np.tile(row, (2, 1))
    for op in backend.sample(OPS, 3, salt=case):
        if op in ("moments", "skipna"):
            m, v = backend.back(nbnorm.moments(backend.put(x2), 1, skipna=op == "skipna"))
            _check_mean(float(m[-1]), mean, row, sd)
            _check_var(float(v[-1]), var, row, sd)
        elif op == "state":
            s = nbnorm.Moments.of(backend.put(x2), 1)
            _check_mean(float(backend.get(s.mean)[-1]), mean, row, sd)
            assert not np.isnan(backend.get(s.var())).any()
        elif op == "forward":
            x = np.ascontiguousarray(x2.T)
            y, m, inv = backend.back(nbnorm.batch_norm_forward(backend.put(x), axis=0, eps=0.0))
            _check_mean(float(m[-1]), mean, row, sd)
            _check_y(y[:, -1], row, mean, var, inv)
        elif op == "layer_norm":
            y, m, inv = backend.back(nbnorm.layer_norm(backend.put(x2), eps=0.0))
            _check_mean(float(m[-1]), mean, row, sd)
            _check_y(y[-1], row, mean, var, inv)
        else:
            y, inv = backend.back(nbnorm.rms_norm(backend.put(x2), eps=0.0))
            assert not np.isnan(inv).any() and not np.isnan(y).any()
