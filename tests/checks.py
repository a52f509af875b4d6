"""The batch-norm checks, defined once for every test and every backend:
:func:`params` and :func:`check_moments`, :func:`check_forward`,
:func:`check_inference`, :func:`check_backward`.

Each check runs one call on the backend ``bk`` (a :class:`helpers.Backend`;
the CPU by default), brings the results back as NumPy arrays and asserts,
against the float64 NumPy reference (:mod:`nbnorm.reference`):

* the dtype and shape of every result, and that an ``out=`` is the result
  returned (``out=x``, for the backward also ``out=dy``: in place);
* that every input is unchanged (but for the one written in place);
* every value within the error bounds of :mod:`helpers`, with NumPy's
  propagation of NaN and ±inf.  For data near the ends of the range the
  bounds get terms added here.  Underflow (:func:`stats_bounds`,
  :func:`y_bound`, the underflow term of :func:`check_backward`): small
  multiples of the smallest subnormal — ``(n + 4)·tiny`` of the statistics'
  dtype for the statistics and the backward's sums (times ``invstd``
  there), ``2·(1 + |weight|)·tiny`` of float64 for ``y`` — below 1e-38 in
  float32 and 1e-300 in float64, so they count only against bounds of
  subnormal size; where :func:`helpers.moments_bound` is 0 (no spread: a
  constant statistic) the constant check below asserts exact values
  anyway.  Overflow (:func:`overflow_to_inf`): the ±inf a correctly rounded
  result holds, taken only where the result is ±inf and the reference
  within its bound of the dtype's overflow threshold;
* that a constant statistic (one finite value throughout) has variance
  exactly 0, its value as mean and (with ``var + eps > 0``) normalizes to
  exactly its bias.

``kind`` names the data in the messages (``strategies.adversarial_values``:
normal, offset, subnormal, near_max, with ``+const``/``+nonfinite``).
"""
from __future__ import annotations

import numpy as np

import nbnorm
from nbnorm import reference as R

from helpers import (CPU, affine_bound, assert_within, backward_bounds, moments_bound,
                     norm_axis, stat_dtype, stat_eps, stat_shape)
from strategies import constant_statistics


# ------------------------------------------------------------------ inputs
def params(x, axis, seed, kinds=("weight", "bias"), dtype=None):
    """Random statistic-shaped weight (``"weight"`` in ``kinds``, standard
    normal × 2) and bias (``"bias"``, × 3), None where left out; in the
    statistics' dtype (float32, float64 for float64 ``x``) or ``dtype``."""
    rng = np.random.default_rng(seed)
    sshape = stat_shape(x.shape, norm_axis(axis, x.ndim))
    sd = stat_dtype(x.dtype) if dtype is None else dtype
    w = (rng.standard_normal(sshape) * 2).astype(sd) if "weight" in kinds else None
    b = (rng.standard_normal(sshape) * 3).astype(sd) if "bias" in kinds else None
    return w, b


# ------------------------------------------------------------------ bounds
def tiny(dtype):
    """The smallest subnormal of ``dtype``."""
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


def _out_name(out, **named):
    if out is None:
        return "None"
    for name, a in named.items():
        if out is a:
            return name
    return f"strides {out.strides}"


def _unchanged(what, **pairs):
    """Each ``name=(now, saved)``: the input (back from the backend) still
    holds its saved copy (None: not given)."""
    for name, (now, s) in pairs.items():
        if s is not None:
            np.testing.assert_array_equal(now, s, err_msg=f"{name} changed: {what}")


# ------------------------------------------------------------------ checks
def check_moments(x, axis, ddof=0, keepdims=False, bk=CPU, kind="normal"):
    """``moments`` on backend ``bk`` against the reference; returns
    ``(mean, var)`` as NumPy.  (Warnings, e.g. for ``ddof ≥ n``, are the
    caller's to filter.)"""
    before = x.copy()
    xd = bk.put(x)
    mean, var = bk.back(nbnorm.moments(xd, axis, ddof=ddof, keepdims=keepdims))
    mr, vr = R.moments(x, axis, ddof=ddof, keepdims=keepdims)
    what = (f"{bk} {kind} {x.dtype} {x.shape} strides {x.strides} axis={axis} ddof={ddof} "
            f"keepdims={keepdims}")
    sd = stat_dtype(x.dtype)
    assert mean.dtype == sd and var.dtype == sd, f"dtypes {mean.dtype} {var.dtype}: {what}"
    # the shape NumPy's reductions give (independent of nbnorm's axis handling)
    want = np.shape(np.zeros(x.shape, np.int8).sum(axis=axis, keepdims=keepdims))
    assert mean.shape == want and var.shape == want and np.shape(mr) == want, (
        f"shapes {mean.shape} {var.shape}, NumPy {want}: {what}")
    mb, vb = stats_bounds(x, axis, mr, vr, ddof)
    assert_within(mean, mr, mb, "mean " + what)
    assert_within(var, vr, vb, "var " + what)
    if reduced(x, axis) - ddof > 0:
        # a constant statistic: no spread at all, and its value as the mean
        const = constant_statistics(x, axis)
        value = np.min(x, axis=norm_axis(axis, x.ndim), keepdims=True)
        if not keepdims:
            const, value = const.reshape(mean.shape), value.reshape(mean.shape)
        assert (var[const] == 0).all(), "var of constant " + what
        assert (mean[const] == value[const]).all(), "mean of constant " + what
    np.testing.assert_array_equal(bk.get(xd), before, err_msg="x changed: " + what)
    return mean, var


def check_forward(x, axis, weight=None, bias=None, eps_=1e-5, out=None, bk=CPU, kind="normal"):
    """``batch_norm_forward`` on backend ``bk`` (``out=x``: in place)
    against the reference; returns ``[y, mean, invstd]`` as NumPy (on the
    CPU the arrays the call returned, ``y`` being ``out``)."""
    in_place = out is x
    before = x.copy()
    saved = [None if a is None else a.copy() for a in (weight, bias)]
    xd, wd, bd = bk.on(x, weight, bias)
    outd = xd if in_place else bk.put(out)
    got = nbnorm.batch_norm_forward(xd, wd, bd, axis=axis, eps=eps_, out=outd)
    what = (f"{bk} {kind} {x.dtype} {x.shape} strides {x.strides} axis={axis} eps={eps_} "
            f"out {_out_name(out, x=x)}")
    if outd is not None:
        assert got[0] is outd, "y is not out: " + what
    y, mean, invstd = res = bk.back(got)
    axn = norm_axis(axis, x.ndim)
    sd = stat_dtype(x.dtype)
    assert y.dtype == x.dtype and y.shape == x.shape, f"y {y.dtype} {y.shape}: {what}"
    assert mean.dtype == sd and invstd.dtype == sd, f"dtypes {mean.dtype} {invstd.dtype}: {what}"
    assert mean.shape == invstd.shape == stat_shape(x.shape, axn), f"shape {mean.shape}: {what}"
    if not in_place:
        np.testing.assert_array_equal(bk.get(xd), before, err_msg="x changed: " + what)
    _unchanged(what, weight=(bk.get(wd), saved[0]), bias=(bk.get(bd), saved[1]))
    yr, mr, ir = R.batch_norm_forward(before, weight, bias, axis=axis, eps=eps_)
    with np.errstate(invalid="ignore", over="ignore"):
        vr = np.var(before.astype(np.float64), axis=axn)
    mb, vb = stats_bounds(before, axis, mr, vr)
    assert_within(mean, mr, mb, "mean " + what)
    with np.errstate(invalid="ignore", divide="ignore"):
        ib = ir * (stat_eps(x.dtype) + 0.5 * vb / (vr + eps_))
    assert_within(invstd, ir, ib, "invstd " + what)
    assert_within(y, yr, y_bound(before, axn, yr, mr, ir, weight, bias, reduced(x, axis)),
                  "y " + what)
    # a constant statistic normalizes to exactly its bias (x − mean is 0),
    # however small var + eps, as long as it is not 0
    keep = tuple(1 if d in axn else s for d, s in enumerate(x.shape))
    const = constant_statistics(before, axis) & np.isfinite(np.asarray(ir).reshape(keep))
    const = np.broadcast_to(const, x.shape)
    b0 = np.zeros(1, x.dtype) if bias is None else np.asarray(bias).astype(x.dtype).reshape(keep)
    assert (y[const] == np.broadcast_to(b0, x.shape)[const]).all(), "y of constant " + what
    return res


def check_inference(x, axis, mean, var, weight=None, bias=None, eps_=1e-5, out=None, bk=CPU,
                    kind="normal"):
    """``batch_norm_inference`` on backend ``bk`` (``out=x``: in place)
    against the reference; returns ``y`` as NumPy (on the CPU the array the
    call returned)."""
    in_place = out is x
    before = x.copy()
    names = ("mean", "var", "weight", "bias")
    saved = {n: None if a is None else a.copy() for n, a in zip(names, (mean, var, weight, bias))}
    xd, *pd = bk.on(x, mean, var, weight, bias)
    outd = xd if in_place else bk.put(out)
    y = nbnorm.batch_norm_inference(xd, *pd, axis=axis, eps=eps_, out=outd)
    what = (f"{bk} {kind} {x.dtype} {x.shape} strides {x.strides} axis={axis} eps={eps_} "
            f"statistics {np.asarray(mean).dtype} out {_out_name(out, x=x)}")
    if outd is not None:
        assert y is outd, "y is not out: " + what
    y = bk.get(y)
    assert y.dtype == x.dtype and y.shape == x.shape, f"y {y.dtype} {y.shape}: {what}"
    if not in_place:
        np.testing.assert_array_equal(bk.get(xd), before, err_msg="x changed: " + what)
    _unchanged(what, **{n: (bk.get(a), saved[n]) for n, a in zip(names, pd)})
    axn = norm_axis(axis, x.ndim)
    yr = R.batch_norm_inference(before, mean, var, weight, bias, axis=axis, eps=eps_)
    with np.errstate(invalid="ignore", divide="ignore"):
        invstd = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps_)
    bound = y_bound(before, axn, yr, mean, invstd, weight, bias)
    assert_within(y, overflow_to_inf(y, yr, bound, x.dtype), bound, "y " + what)
    return y


def check_backward(dy, x, mean, invstd, w, axis, training=True, out=None, bk=CPU, kind="normal"):
    """``batch_norm_backward`` on backend ``bk`` (``out`` may be ``dy`` or
    ``x``: in place) against the reference; returns ``[dx, dweight,
    dbias]`` as NumPy (on the CPU the arrays the call returned).

    Besides :func:`helpers.backward_bounds`: subnormal ``x − mean`` times
    ``dy`` underflows in the statistics' dtype, each of the ``n`` products
    losing up to half its smallest subnormal before ``invstd`` scales them,
    so ``Σdy·x̂`` may be off by ``(n + 4)·tiny·invstd`` (and ``dx`` by that
    times ``|w|·invstd·|x̂|/n``)."""
    names = ("dy", "x", "mean", "invstd", "weight")
    saved = {n: None if a is None else a.copy() for n, a in zip(names, (dy, x, mean, invstd, w))}
    args = bk.on(dy, x, mean, invstd, w)
    outd = (None if out is None else args[0] if out is dy else args[1] if out is x
            else bk.put(out))
    got = nbnorm.batch_norm_backward(*args, axis=axis, training=training, out=outd)
    what = (f"{bk} {kind} {x.dtype} {x.shape} x strides {x.strides} dy strides {dy.strides} "
            f"axis={axis} training={training} out {_out_name(out, dy=dy, x=x)}")
    if outd is not None:
        assert got[0] is outd, "dx is not out: " + what
    dx, dw, db = res = bk.back(got)
    dy0, x0 = saved["dy"], saved["x"]
    axn = norm_axis(axis, x0.ndim)
    sd = stat_dtype(x0.dtype)
    assert dx.dtype == x0.dtype and dx.shape == x0.shape, f"dx {dx.dtype} {dx.shape}: {what}"
    assert dw.dtype == sd and db.dtype == sd, f"dtypes {dw.dtype} {db.dtype}: {what}"
    assert dw.shape == db.shape == stat_shape(x0.shape, axn), f"shape {dw.shape}: {what}"
    _unchanged(what, **{n: (bk.get(a), saved[n]) for n, a in zip(names, args) if a is not outd})
    dxr, dwr, dbr = R.batch_norm_backward(dy0, x0, mean, invstd, w, axis=axis, training=training)
    dxb, dwb, dbb = backward_bounds(dy0, x0, axis, mean, invstd, w, training, dxr)
    n = reduced(x0, axis)
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
