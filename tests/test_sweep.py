"""The one Hypothesis sweep of the numerics: every batch-norm function on
adversarial data, the normalization family and the NaN-aware statistics,
each against its float64 reference.

Swept (in parentheses each test's ``max_examples``: a base count, which
``conftest.py`` multiplies by the Hypothesis profile's factor; 430 in all,
so the ``ci`` profile, 5 ×, runs 2,150 examples here;
``HYPOTHESIS_PROFILE=long python -m pytest tests/test_sweep.py`` soaks):

``test_moments`` (80), ``test_forward`` (80), ``test_inference`` (80), ``test_backward`` (80)
    Shapes of 1–5 dimensions × axis subsets (negative aliases, ``axis=None``
    and the empty subset for the moments, the empty subset for the
    inference) × random strided layouts (permuted, C/F, gaps, flipped) ×
    float16/32/64, with the values of :func:`strategies.adversarial_values`:
    data of order one, large offsets, subnormals and float16 values near
    65504, some statistics constant, a few values NaN/±inf.  ``ddof`` 0/1
    and ``keepdims``; weight and bias each present or not (for the
    inference in the statistics' dtype or in x's, with statistics of any
    float dtype, fitted to the data or arbitrary); ``eps`` including 0 (for
    the forward where every statistic has a clear spread, else 1e-5; for the
    inference with zero variances set to 1); the backward in training and
    frozen, its ``dy`` in a layout of its own, sometimes with NaN/±inf.
    Each call is checked by :mod:`checks` (dtypes and shapes, inputs
    unchanged, values within the error bounds, constant statistics exact),
    with ``out=None`` and with ``out=`` a fresh array in a random strided
    layout; in place (``out=x``, for the backward also ``out=dy``) the
    results must be bit for bit those of the out-of-place call into an
    array of the same layout (same plan, only the aliasing differs).
``test_family_members`` (30)
    Layer, group, instance and RMS norm, forward and backward, over random
    shapes, axes, channel axes, groups, offsets and layouts (the checks of
    ``test_family.py``).
``test_layer_norm_is_batch_norm`` (40)
    Layer norm without weight and bias against ``batch_norm_forward`` over
    the same axes, bit for bit, on the adversarial cases above.
``test_skipna_nan_masks`` (40)
    ``moments(skipna=True)`` with random NaN masks, over random layouts,
    against ``np.nanmean``/``np.nanvar`` and the per-statistic counts (the
    check of ``test_skipna.py``).

The per-operation test files hold the example-based checks (every axis
subset and layout of a 4-d array, the chunked and fused paths at large
shapes, adversarial cases by name) on every backend; they use the same
:mod:`checks`.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
from hypothesis import event, given, settings, strategies as st

import nbnorm
from nbnorm import reference as R

from checks import (check_backward, check_forward, check_inference, check_moments, params,
                    stats_bounds)
from helpers import FLOATS, norm_axis, normal, relayout, stat_dtype, stat_shape
from strategies import adversarial_cases, arrays, layouts, reduction_cases
from test_family import MEMBERS, Member, params as member_params, run_backward, run_forward
from test_skipna import check as check_skipna

BASE = 80


def quiet(test):
    """Run the test body under ``np.errstate(all="ignore")``: the float64
    references and the bounds meet NaN, inf and underflow on purpose."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        with np.errstate(all="ignore"):
            return test(*args, **kwargs)
    return run


def label(x, kind):
    """Report the kind of data and the dtype (``--hypothesis-show-statistics``)."""
    event(f"{kind.split('+')[0]} {x.dtype}")
    for flag in kind.split("+")[1:]:
        event(flag)


def identical(got, expect, what):
    """Results of an in-place call and of its out-of-place twin: bit for bit."""
    for name, u, v in zip(("first result", "second", "third"), got, expect):
        np.testing.assert_array_equal(u, v, err_msg=f"{what}: {name}")


def same_layout(a):
    """A new NaN-filled array with ``a``'s shape, dtype and strides (negative
    ones and gaps included).  An ``out=`` of ``x``'s very layout makes the
    same plan (reduction order included) as ``out=x``: only the aliasing
    differs."""
    lo = sum(min(0, (n - 1) * st) for n, st in zip(a.shape, a.strides))
    hi = sum(max(0, (n - 1) * st) for n, st in zip(a.shape, a.strides)) + a.itemsize
    buf = np.full((hi - lo) // a.itemsize, np.nan, a.dtype)
    b = np.ndarray(a.shape, a.dtype, buffer=buf, offset=-lo, strides=a.strides)
    assert b.strides == a.strides and not np.shares_memory(a, b)
    return b


def fresh_out(data, x):
    """A garbage-filled array of ``x``'s shape and dtype in a random layout."""
    return data.draw(arrays(x.shape, x.dtype), label="out")


def spread_for_zero_eps(x, ax):
    """Whether ``eps = 0`` is well defined for ``x``'s statistics: every
    finite variance in the normal range of the statistics' dtype and larger
    than four times its error bound (so ``1/√var`` is finite and accurate).
    Constant statistics, subnormal data and float16 offsets rounded to one
    value are not."""
    mr, vr = R.moments(x, ax)
    _, vb = stats_bounds(x, ax, mr, vr)
    fin = np.isfinite(vr)
    small = float(np.finfo(stat_dtype(x.dtype)).smallest_normal)
    return bool(np.all((vr[fin] >= small) & (4 * vb[fin] < vr[fin])))


# ------------------------------------------------------------------ moments
@settings(max_examples=BASE)
@given(case=adversarial_cases(allow_none=True, allow_empty=True),
       ddof=st.sampled_from([0, 1]), keepdims=st.booleans())
@quiet
def test_moments(case, ddof, keepdims):
    x, ax, kind = case
    label(x, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # ddof >= n
        check_moments(x, ax, ddof=ddof, keepdims=keepdims, kind=kind)


# ------------------------------------------------------------------ forward
affines = st.sampled_from([(), ("weight",), ("bias",), ("weight", "bias")])


@settings(max_examples=BASE)
@given(case=adversarial_cases(min_n=2), kinds=affines,
       eps=st.sampled_from([1e-5, 1e-3, 0.5, 0.0]), seed=st.integers(0, 2**16), data=st.data())
@quiet
def test_forward(case, kinds, eps, seed, data):
    """Without out=, into a fresh array in a random layout, and in place on
    a copy of x in a random layout: exactly the out-of-place call into an
    array of that copy's layout.  (The statistics' rounding may depend on
    out's layout: the reduction order is planned over every operand.)"""
    x, ax, kind = case
    label(x, kind)
    if eps == 0.0:
        eps = 0.0 if spread_for_zero_eps(x, ax) else 1e-5
        event("eps 0" if eps == 0.0 else "eps 0 → 1e-5 (a statistic without a clear spread)")
    w, b = params(x, ax, seed, kinds)
    check_forward(x, ax, w, b, eps, kind=kind)
    check_forward(x, ax, w, b, eps, out=fresh_out(data, x), kind=kind)
    xi = relayout(x, **data.draw(layouts(x.ndim), label="x copy layout"))
    expect = check_forward(xi, ax, w, b, eps, out=same_layout(xi), kind=kind)
    identical(check_forward(xi, ax, w, b, eps, out=xi, kind=kind), expect, "out=x")


# ---------------------------------------------------------------- inference
@settings(max_examples=BASE)
@given(case=adversarial_cases(allow_empty=True), kinds=affines,
       fitted=st.booleans(), sdtype=st.sampled_from(FLOATS),
       affine_dtype=st.sampled_from(["x's statistics", "statistics"]),
       eps=st.sampled_from([1e-5, 0.0, 0.1]), seed=st.integers(0, 2**16), data=st.data())
@quiet
def test_inference(case, kinds, fitted, sdtype, affine_dtype, eps, seed, data):
    """Statistics fitted to the data (mean and var near the data's own:
    outputs of order 1) or arbitrary (outputs may overflow float16); weight
    and bias in the dtype of x's own statistics or of the given ones.
    Without out=, into a fresh array in a random layout (bit for bit the
    same: no reduction), and in place on a copy of x in a random layout:
    exactly the out-of-place call into an array of that copy's layout."""
    x, ax, kind = case
    label(x, kind)
    axn = norm_axis(ax, x.ndim)
    sshape = stat_shape(x.shape, axn)
    rng = np.random.default_rng(seed)
    if fitted:
        with np.errstate(invalid="ignore", over="ignore"):
            mr, vr = R.moments(np.where(np.isfinite(x), x, 0), axn)
        mean = mr + rng.standard_normal(sshape) * np.sqrt(vr)
        var = vr * rng.uniform(0.5, 2.0, sshape)
    else:
        mean = rng.standard_normal(sshape) * 2
        var = rng.random(sshape) * 3 + 0.1
    with np.errstate(over="ignore"):
        mean, var = np.asarray(mean).astype(sdtype), np.asarray(var).astype(sdtype)
    if eps == 0.0:
        var = np.where(var > 0, var, 1).astype(sdtype)       # var + eps > 0
    w, b = params(x, ax, seed + 1, kinds, dtype=sdtype if affine_dtype == "statistics" else None)
    args = (mean, var, w, b, eps)
    y = check_inference(x, ax, *args, kind=kind)
    identical((check_inference(x, ax, *args, out=fresh_out(data, x), kind=kind),), (y,),
              "out= fresh")
    xi = relayout(x, **data.draw(layouts(x.ndim), label="x copy layout"))
    expect = check_inference(xi, ax, *args, out=same_layout(xi), kind=kind)
    identical((check_inference(xi, ax, *args, out=xi, kind=kind),), (expect,), "out=x")


# ----------------------------------------------------------------- backward
@settings(max_examples=BASE)
@given(case=adversarial_cases(min_n=2), training=st.booleans(), with_weight=st.booleans(),
       dy_nonfinite=st.sampled_from([False, False, False, True]),
       eps=st.sampled_from([1e-5, 1e-3]), seed=st.integers(0, 2**16), data=st.data())
@quiet
def test_backward(case, training, with_weight, dy_nonfinite, eps, seed, data):
    """Statistics from the forward of the same (adversarial) ``x``; ``dy``
    standard normal in its own layout, a few values NaN/±inf sometimes.
    Without out=, into a fresh array in a random layout, and in place on a
    copy of dy and on a copy of x, each in a random layout: exactly the
    out-of-place call into an array of that copy's layout."""
    x, ax, kind = case
    label(x, kind)
    axn = norm_axis(ax, x.ndim)
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(x.shape)
    if dy_nonfinite:
        for _ in range(rng.integers(1, 3, endpoint=True)):
            g[tuple(int(rng.integers(0, s)) for s in x.shape)] = rng.choice([np.nan, np.inf,
                                                                             -np.inf])
    dy = relayout(g.astype(x.dtype), **data.draw(layouts(x.ndim), label="dy layout"))
    w = (rng.standard_normal(stat_shape(x.shape, axn)).astype(stat_dtype(x.dtype))
         if with_weight else None)
    _, mean, invstd = nbnorm.batch_norm_forward(x, axis=ax, eps=eps)

    def check(dy, x, out=None):
        return check_backward(dy, x, mean, invstd, w, ax, training, out=out, kind=kind)

    check(dy, x)
    check(dy, x, out=fresh_out(data, x))
    dyi = relayout(dy, **data.draw(layouts(x.ndim), label="dy copy layout"))
    expect = check(dyi, x, out=same_layout(dyi))
    identical(check(dyi, x, out=dyi), expect, "out=dy")
    xi = relayout(x, **data.draw(layouts(x.ndim), label="x copy layout"))
    expect = check(dy, xi, out=same_layout(xi))
    identical(check(dy, xi, out=xi), expect, "out=x")


# ------------------------------------------------------------------- family
@settings(max_examples=30)
@given(st.data())
def test_family_members(data):
    name = data.draw(st.sampled_from(MEMBERS))
    dtype = data.draw(st.sampled_from(FLOATS))
    nd = data.draw(st.integers(2, 4))
    shape = tuple(data.draw(st.integers(1, 5)) for _ in range(nd))
    if name in ("layer", "rms"):
        ax = data.draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
        m = Member(name, shape, axis=tuple(a - nd if data.draw(st.booleans()) else a for a in ax))
    else:
        ca = data.draw(st.integers(1, nd - 1))
        c = shape[ca]
        groups = data.draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
        m = Member(name, shape, groups=groups, channel_axis=ca - nd if data.draw(st.booleans())
                   else ca)
    x0 = normal(shape, dtype, seed=data.draw(st.integers(0, 2**16)),
                loc=data.draw(st.sampled_from([0.0, 3.0, 1e3])))
    x = relayout(x0, **data.draw(layouts(nd)))
    w, b = member_params(m, dtype, seed=1, with_bias=data.draw(st.booleans()))
    run_forward(m, x, w, b)
    run_backward(m, x, w, seed=2)


@settings(max_examples=BASE // 2)
@given(case=adversarial_cases(min_n=2), data=st.data())
@quiet
def test_layer_norm_is_batch_norm(case, data):
    """Layer norm runs on batch norm's kernels: without weight and bias its
    statistics and ``y`` are ``batch_norm_forward``'s over the same axes,
    bit for bit, on every layout, dtype and kind of data (the one-run path
    of short rows, the fused walk, the chunked and the column reductions),
    also into an ``out`` of another layout.  With per-element weight and
    bias ``y`` is that map's: ``y_bn·w + b`` within the float rounding."""
    x, ax, kind = case
    label(x, kind)
    axis = tuple(range(x.ndim)) if ax is None else ax
    got = nbnorm.layer_norm(x, axis=axis)
    expect = nbnorm.batch_norm_forward(x, axis=axis)
    identical(got, expect, f"layer_norm vs batch_norm_forward, {kind}")
    out = data.draw(arrays(x.shape, x.dtype), label="out")
    y, mean, invstd = nbnorm.layer_norm(x, axis=axis, out=out)
    assert y is out
    identical((mean, invstd), expect[1:], "statistics with out= in another layout")


# ------------------------------------------------------------------- skipna
@settings(max_examples=40)
@given(st.data())
def test_skipna_nan_masks(data):
    x, axis = data.draw(reduction_cases(allow_none=True))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    mask = rng.random(x.shape) < data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    values = np.array(x, copy=True)
    values[mask] = np.nan
    check_skipna(relayout(values, **data.draw(layouts(x.ndim))), axis)
