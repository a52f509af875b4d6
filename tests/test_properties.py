"""Property tests: every public function on adversarial data.

Shapes × axis subsets × strided layouts × float16/32/64 × ``out`` layouts,
with the values of :func:`strategies.adversarial_values`: large offsets,
constant statistics, NaN/±inf, subnormals and float16 values near 65504.
Each result is checked against the float64 NumPy reference
(:mod:`nbnorm.reference`) within the error bounds of :mod:`helpers` (with
NumPy's propagation of NaN/inf, and terms for underflow and float16
overflow added here), with ``out=None`` and with ``out=`` a fresh array in a
random strided layout; in place (``out=x``, for the backward also
``out=dy``) the results must be bit for bit those of the out-of-place call
into an array of the same layout (same plan, only the aliasing differs).
A constant statistic must have variance exactly 0, its value as mean, and
normalize to exactly its bias.

The ``max_examples`` below are base counts, scaled by the Hypothesis
profile (see ``conftest.py``).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
from hypothesis import event, given, settings, strategies as st

import nbnorm
from nbnorm import reference as R

from helpers import (FLOATS, affine_bound, assert_within, backward_bounds, moments_bound,
                     norm_axis, relayout, stat_dtype, stat_eps, stat_shape)
from strategies import adversarial_cases, arrays, constant_statistics, layouts

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


def tiny(dtype):
    return float(np.finfo(dtype).smallest_subnormal)


def reduced(x, axis):
    """Number of elements reduced into each statistic."""
    return int(np.prod([x.shape[d] for d in norm_axis(axis, x.ndim)]))


def stats_bounds(x, axis, mean_ref, var_ref, ddof=0):
    """:func:`helpers.moments_bound` plus the underflow of the statistics'
    dtype: subnormal data has a variance below float32's (float64's) range,
    and each of the ``n`` rounded terms can lose half its smallest subnormal."""
    mb, vb = moments_bound(x, axis, mean_ref, var_ref, ddof)
    under = (reduced(x, axis) + 4) * tiny(stat_dtype(x.dtype))
    return mb + under, vb + under


def y_bound(x, axn, yr, mean, invstd, w, b, n=None):
    """:func:`helpers.affine_bound` plus the reference's own rounding where
    it underflows: it computes ``(x − mean)·invstd`` (or ``/√(var + eps)``)
    first, which for float64 data near the subnormal range is rounded to
    the subnormal grid (half of float64's smallest subnormal) before
    ``weight`` scales it."""
    wa = 1.0 if w is None else np.abs(np.asarray(w, np.float64)).reshape(
        tuple(1 if d in axn else s for d, s in enumerate(x.shape)))
    return affine_bound(x, axn, yr, mean, invstd, w, b, n) + 2 * tiny(np.float64) * (1 + wa)


def overflow_to_inf(got, ref, bound, dtype):
    """The reference with values beyond ``dtype``'s range replaced by the
    ±inf a correctly rounded ``dtype`` result holds (where ``got`` is inf and
    ``ref`` is within ``bound`` of the overflow threshold, either is right)."""
    got = np.asarray(got, np.float64)
    fi = np.finfo(dtype)
    top = float(fi.max)
    thr = top + (top - float(np.nextafter(fi.max, fi.dtype.type(0)))) / 2   # rounds to inf
    ref = np.array(ref, np.float64)
    with np.errstate(invalid="ignore"):
        hit = (np.isinf(got) & np.isfinite(ref) & (np.sign(got) == np.sign(ref))
               & (np.abs(ref) + np.broadcast_to(bound, ref.shape) >= thr))
    ref[hit] = got[hit]
    return ref


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


# ------------------------------------------------------------------ moments
@settings(max_examples=BASE)
@given(case=adversarial_cases(allow_none=True, allow_empty=True),
       ddof=st.sampled_from([0, 1]), keepdims=st.booleans())
@quiet
def test_moments(case, ddof, keepdims):
    x, ax, kind = case
    label(x, kind)
    before = x.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # ddof >= n
        mean, var = nbnorm.moments(x, ax, ddof=ddof, keepdims=keepdims)
        mr, vr = R.moments(x, ax, ddof=ddof, keepdims=keepdims)
    what = f"{kind} {x.dtype} {x.shape} strides {x.strides} axis={ax} ddof={ddof}"
    sd = stat_dtype(x.dtype)
    assert mean.dtype == sd and var.dtype == sd, what
    mb, vb = stats_bounds(x, ax, mr, vr, ddof)
    assert_within(mean, mr, mb, "mean " + what)
    assert_within(var, vr, vb, "var " + what)
    if reduced(x, ax) - ddof > 0:
        # a constant statistic: no spread at all, and its value as the mean
        const = constant_statistics(x, ax)
        value = np.min(x, axis=norm_axis(ax, x.ndim), keepdims=True)
        if not keepdims:
            const, value = const.reshape(mean.shape), value.reshape(mean.shape)
        assert (var[const] == 0).all(), "var of constant " + what
        assert (mean[const] == value[const]).all(), "mean of constant " + what
    np.testing.assert_array_equal(x, before)


# ------------------------------------------------------------------ forward
def check_forward(x, ax, w, b, eps, kind, out=None):
    """One forward call, checked against the reference; returns its results."""
    before = x.copy()
    res = nbnorm.batch_norm_forward(x, w, b, axis=ax, eps=eps, out=out)
    y, mean, invstd = res
    x = before if out is x else x
    what = (f"{kind} {x.dtype} {x.shape} strides {x.strides} axis={ax} eps={eps} "
            f"out {'x' if out is x else None if out is None else out.strides}")
    assert y.dtype == x.dtype and y.shape == x.shape, what
    if out is not None:
        assert y is out, what
    else:
        np.testing.assert_array_equal(x, before)
    sd = stat_dtype(x.dtype)
    assert mean.dtype == sd and invstd.dtype == sd, what
    axn = norm_axis(ax, x.ndim)
    yr, mr, ir = R.batch_norm_forward(x, w, b, axis=ax, eps=eps)
    vr = np.var(x.astype(np.float64), axis=axn)
    mb, vb = stats_bounds(x, ax, mr, vr)
    assert_within(mean, mr, mb, "mean " + what)
    assert_within(invstd, ir, ir * (stat_eps(x.dtype) + 0.5 * vb / (vr + eps)), "invstd " + what)
    assert_within(y, yr, y_bound(x, axn, yr, mr, ir, w, b, reduced(x, ax)), "y " + what)
    # a constant statistic normalizes to exactly its bias
    const = np.broadcast_to(constant_statistics(x, ax), x.shape)
    bias = np.zeros(1, x.dtype) if b is None else np.asarray(b).astype(x.dtype).reshape(
        tuple(1 if d in axn else s for d, s in enumerate(x.shape)))
    assert (y[const] == np.broadcast_to(bias, x.shape)[const]).all(), "y of constant " + what
    return res


def params(x, ax, seed, kinds):
    rng = np.random.default_rng(seed)
    sshape = stat_shape(x.shape, norm_axis(ax, x.ndim))
    sd = stat_dtype(x.dtype)
    w = (rng.standard_normal(sshape) * 2).astype(sd) if "weight" in kinds else None
    b = (rng.standard_normal(sshape) * 3).astype(sd) if "bias" in kinds else None
    return w, b


affines = st.sampled_from([(), ("weight",), ("bias",), ("weight", "bias")])


@settings(max_examples=BASE)
@given(case=adversarial_cases(min_n=2), kinds=affines, eps=st.sampled_from([1e-5, 1e-3, 0.5]),
       seed=st.integers(0, 2**16), data=st.data())
@quiet
def test_forward(case, kinds, eps, seed, data):
    """Without out=, into a fresh array in a random layout, and in place on
    a copy of x in a random layout: exactly the out-of-place call into an
    array of that copy's layout.  (The statistics' rounding may depend on
    out's layout: the reduction order is planned over every operand.)"""
    x, ax, kind = case
    label(x, kind)
    w, b = params(x, ax, seed, kinds)
    check_forward(x, ax, w, b, eps, kind)
    check_forward(x, ax, w, b, eps, kind, out=fresh_out(data, x))
    xi = relayout(x, **data.draw(layouts(x.ndim), label="x copy layout"))
    expect = check_forward(xi, ax, w, b, eps, kind, out=same_layout(xi))
    identical(check_forward(xi, ax, w, b, eps, kind, out=xi), expect, "out=x")


# ---------------------------------------------------------------- inference
@settings(max_examples=BASE)
@given(case=adversarial_cases(allow_empty=True), kinds=affines,
       fitted=st.booleans(), sdtype=st.sampled_from(FLOATS), eps=st.sampled_from([1e-5, 0.1]),
       seed=st.integers(0, 2**16), data=st.data())
@quiet
def test_inference(case, kinds, fitted, sdtype, eps, seed, data):
    """Statistics fitted to the data (mean and var near the data's own:
    outputs of order 1) or arbitrary (outputs may overflow float16)."""
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
    w, b = params(x, ax, seed + 1, kinds)
    before = x.copy()
    y = nbnorm.batch_norm_inference(x, mean, var, w, b, axis=ax, eps=eps)
    what = f"{kind} {x.dtype} {x.shape} strides {x.strides} axis={ax} stats {np.dtype(sdtype)}"
    assert y.dtype == x.dtype and y.shape == x.shape, what
    yr = R.batch_norm_inference(x, mean, var, w, b, axis=ax, eps=eps)
    with np.errstate(invalid="ignore", divide="ignore"):
        invstd = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps)
    bound = y_bound(x, axn, yr, mean, invstd, w, b)
    assert_within(y, overflow_to_inf(y, yr, bound, x.dtype), bound, "y " + what)
    np.testing.assert_array_equal(x, before)
    out = fresh_out(data, x)
    assert nbnorm.batch_norm_inference(x, mean, var, w, b, axis=ax, eps=eps, out=out) is out
    identical((out,), (y,), "out= fresh")
    xi = relayout(x, **data.draw(layouts(x.ndim), label="x copy layout"))
    expect = nbnorm.batch_norm_inference(xi, mean, var, w, b, axis=ax, eps=eps,
                                         out=same_layout(xi))
    assert nbnorm.batch_norm_inference(xi, mean, var, w, b, axis=ax, eps=eps, out=xi) is xi
    identical((xi,), (expect,), "out=x")


# ----------------------------------------------------------------- backward
def check_backward(dy, x, mean, invstd, w, ax, training, kind, out=None):
    """One backward call, checked against the reference; returns its results.

    Besides :func:`helpers.backward_bounds`: subnormal ``x − mean`` times
    ``dy`` underflows in the statistics' dtype, each of the ``n`` products
    losing up to half its smallest subnormal before ``invstd`` scales them,
    so ``Σdy·x̂`` may be off by ``(n + 4)·tiny·invstd`` (and ``dx`` by that
    times ``|w|·invstd·|x̂|/n``)."""
    saved = [a.copy() for a in (dy, x, mean, invstd)]
    res = nbnorm.batch_norm_backward(dy, x, mean, invstd, w, axis=ax, training=training,
                                     out=out)
    dx, dw, db = res
    dy0, x0 = saved[0], saved[1]
    what = (f"{kind} {x0.dtype} {x0.shape} x strides {x.strides} dy strides {dy.strides} "
            f"axis={ax} training={training} "
            f"out {'dy' if out is dy else 'x' if out is x else None if out is None else out.strides}")
    axn = norm_axis(ax, x0.ndim)
    sd = stat_dtype(x0.dtype)
    assert dx.dtype == x0.dtype and dx.shape == x0.shape, what
    assert dw.dtype == sd and db.dtype == sd and dw.shape == stat_shape(x0.shape, axn), what
    if out is not None:
        assert dx is out, what
    for a, s in zip((dy, x, mean, invstd), saved):
        if a is not out:
            np.testing.assert_array_equal(a, s)
    dxr, dwr, dbr = R.batch_norm_backward(dy0, x0, mean, invstd, w, axis=ax, training=training)
    dxb, dwb, dbb = backward_bounds(dy0, x0, ax, mean, invstd, w, training, dxr)
    n = reduced(x0, ax)
    k = tuple(1 if d in axn else s for d, s in enumerate(x0.shape))
    inv = np.abs(np.asarray(invstd, np.float64)).reshape(k)
    under = (n + 4) * tiny(sd) * inv
    dwb = dwb + under.reshape(dwb.shape)
    if training:
        wa = 1.0 if w is None else np.abs(np.asarray(w, np.float64)).reshape(k)
        xhat = np.abs(x0.astype(np.float64) - np.asarray(mean, np.float64).reshape(k)) * inv
        dxb = dxb + wa * inv * xhat * under / n
    assert_within(dx, overflow_to_inf(dx, dxr, dxb, x0.dtype), dxb, "dx " + what)
    assert_within(dw, dwr, dwb, "dweight " + what)
    assert_within(db, dbr, dbb, "dbias " + what)
    return res


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
    args = (mean, invstd, w, ax, training, kind)
    check_backward(dy, x, *args)
    check_backward(dy, x, *args, out=fresh_out(data, x))
    dyi = relayout(dy, **data.draw(layouts(x.ndim), label="dy copy layout"))
    expect = check_backward(dyi, x, *args, out=same_layout(dyi))
    identical(check_backward(dyi, x, *args, out=dyi), expect, "out=dy")
    xi = relayout(x, **data.draw(layouts(x.ndim), label="x copy layout"))
    expect = check_backward(dy, xi, *args, out=same_layout(xi))
    identical(check_backward(dy, xi, *args, out=xi), expect, "out=x")
