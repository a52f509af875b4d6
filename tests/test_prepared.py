"""Prepared calls (nbnorm._calls): a call whose signature was seen before
skips routing and validation.  It must compute from the arrays it is given,
bit for bit as a first call does, refuse every call a first call refuses,
with the same exception, and leave the outputs of a refused call untouched."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nbnorm
from nbnorm import _calls, _router

from helpers import normal

OPS = ("batch_norm_forward", "batch_norm_inference", "batch_norm_backward", "layer_norm",
       "layer_norm_backward", "group_norm", "group_norm_backward", "instance_norm",
       "instance_norm_backward", "rms_norm", "rms_norm_backward", "moments")


@pytest.fixture(autouse=True)
def empty_memo():
    _calls.calls.clear()
    yield
    _calls.calls.clear()


class Routed:
    """Counts the calls that were routed and validated."""

    def __init__(self, monkeypatch):
        self.calls = 0
        dispatch = _router.dispatch

        def counted(*args, **kwargs):
            self.calls += 1
            return dispatch(*args, **kwargs)
        monkeypatch.setattr(_router, "dispatch", counted)


def layout(a, kind):
    """``a``'s values in another memory layout (same shape)."""
    if kind == "C":
        return a.copy()
    if kind == "F":
        return np.asfortranarray(a)
    buf = np.empty((a.shape[0] * 2,) + a.shape[1:], a.dtype)      # every other row
    view = buf[::2]
    view[...] = a
    return view


def arrays(op, shape, dtype, seed, present, kind):
    """``(args, kwargs)`` of a valid call of ``op``; ``present`` picks the
    optional arrays (weight, bias, out, running statistics)."""
    rng = np.random.default_rng(seed)
    x = layout(normal(shape, dtype, seed=seed, loc=3.0, scale=2.0), kind)
    dy = layout(normal(shape, dtype, seed=seed + 1), kind)
    sd = np.float64 if dtype == np.float64 else np.float32
    N, C = shape[0], shape[1]
    w_pick, b_pick, out_pick, run_pick = present

    def vec(n, lo=0.5):
        return rng.uniform(lo, 2.0, n).astype(sd)

    out = np.empty_like(x) if out_pick else None
    if op == "moments":
        return (x, (0,) + tuple(range(2, len(shape)))), {}
    if op.startswith("batch_norm"):
        axis = (0,) + tuple(range(2, len(shape)))
        kw = dict(axis=axis, out=out)
        w = vec(C) if w_pick else None
        if op == "batch_norm_forward":
            if run_pick:
                kw.update(running_mean=vec(C), running_var=vec(C))
            return (x, w, vec(C) if b_pick else None), kw
        if op == "batch_norm_inference":
            return (x, vec(C, -1.0), vec(C), w, vec(C) if b_pick else None), kw
        _, mean, inv = nbnorm.batch_norm_forward(x, axis=axis)
        return (dy, x, mean, inv, w), kw | dict(training=bool(run_pick))
    if op.startswith("layer_norm") or op.startswith("rms_norm"):
        axis = tuple(range(1, len(shape)))
        pshape = shape[1:]
        w = vec(pshape) if w_pick else None
        if op == "layer_norm":
            return (x, w, vec(pshape) if b_pick else None), dict(axis=axis, out=out)
        if op == "rms_norm":
            return (x, w), dict(axis=axis, out=out)
        if op == "layer_norm_backward":
            _, mean, inv = nbnorm.layer_norm(x, axis=axis)
            return (dy, x, mean, inv, w), dict(axis=axis, out=out)
        _, rstd = nbnorm.rms_norm(x, axis=axis)
        return (dy, x, rstd, w), dict(axis=axis, out=out)
    groups = 2 if C % 2 == 0 else 1
    w = vec(C) if w_pick else None
    if op == "group_norm":
        return (x, groups, w, vec(C) if b_pick else None), dict(out=out)
    if op == "instance_norm":
        kw = dict(out=out)
        if run_pick and len(shape) > 2:      # (one value per instance: no running variance)
            kw.update(running_mean=vec(C), running_var=vec(C))
        return (x, w, vec(C) if b_pick else None), kw
    if op == "group_norm_backward":
        _, mean, inv = nbnorm.group_norm(x, groups)
        return (dy, x, mean, inv, groups, w), dict(out=out)
    _, mean, inv = nbnorm.instance_norm(x)
    return (dy, x, mean, inv, w), dict(out=out)


def written(args, kwargs):
    """Copies of every array argument (to compare after a call)."""
    return [a.copy() for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]


def call(op, args, kwargs):
    return getattr(nbnorm, op)(*args, **kwargs)


def same(a, b):
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(u, v)
        assert u.dtype == v.dtype and u.shape == v.shape


shapes = st.sampled_from([(4, 6), (3, 4, 5), (2, 6, 3, 3), (8, 4, 2, 5)])
dtypes = st.sampled_from([np.float32, np.float64, np.float16])


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(OPS), shape=shapes, dtype=dtypes, seed=st.integers(0, 2**16),
       present=st.tuples(*[st.booleans()] * 4), kind=st.sampled_from(["C", "F", "rows"]))
def test_a_prepared_call_computes_bitwise_as_a_first_call(op, shape, dtype, seed, present, kind):
    """Two calls of one signature on other data: the second is not routed,
    and its results and written arguments are bitwise those of a call that
    routes and validates afresh."""
    first = arrays(op, shape, dtype, seed, present, kind)
    second = arrays(op, shape, dtype, seed + 7, present, kind)
    again = arrays(op, shape, dtype, seed + 7, present, kind)     # the same, afresh
    call(op, *first)
    with pytest.MonkeyPatch.context() as mp:
        routed = Routed(mp)
        got = call(op, *second)
        assert routed.calls == 0, op
    _calls.calls.clear()
    with pytest.MonkeyPatch.context() as mp:
        routed = Routed(mp)
        want = call(op, *again)
        assert routed.calls == 1, op
    same(got, want)
    for u, v in zip(written(*second), written(*again)):
        np.testing.assert_array_equal(u, v)


def overlapping_out(x):
    """An ``out`` of ``x``'s signature whose memory overlaps ``x`` (shifted
    by one element): refused."""
    buf = np.empty(x.size + 1, x.dtype)
    xs = buf[:-1].reshape(x.shape)
    xs[...] = x
    return xs, buf[1:].reshape(x.shape)


@settings(max_examples=30, deadline=None)
@given(op=st.sampled_from([o for o in OPS if o != "moments"]), shape=shapes,
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
       present=st.tuples(*[st.booleans()] * 3), bad=st.sampled_from(["out", "running"]))
def test_a_prepared_call_refuses_what_a_first_call_refuses(op, shape, dtype, seed, present,
                                                            bad):
    """After valid calls of a signature, a call of that signature whose
    output shares memory with an input raises the ValueError a first call
    raises, and writes nothing."""
    has_running = op == "batch_norm_forward" or (op == "instance_norm" and len(shape) > 2)
    if bad == "running" and not has_running:
        bad = "out"
    args, kwargs = arrays(op, shape, dtype, seed, present + (True,), "C")
    call(op, args, kwargs)
    call(op, args, kwargs)
    x_pos = 1 if "backward" in op else 0
    args = list(args)
    if bad == "out":
        args[x_pos], kwargs["out"] = overlapping_out(args[x_pos])
    else:
        args[1] = kwargs["running_mean"]         # weight is running_mean: refused
    before = written(args, kwargs)
    errors = []
    for clear in (False, True):
        if clear:
            _calls.calls.clear()
        with pytest.raises(ValueError, match="shares memory") as info:
            call(op, args, kwargs)
        errors.append(str(info.value))
        for u, v in zip(before, written(args, kwargs)):
            np.testing.assert_array_equal(u, v)
    assert errors[0] == errors[1]


@pytest.mark.parametrize("op", ["batch_norm_forward", "batch_norm_inference", "layer_norm",
                                "rms_norm", "group_norm", "instance_norm"])
def test_in_place_out_is_the_input_on_a_prepared_call(op):
    """``out=x`` (allowed) on a prepared call: y written over x, as on a first call."""
    args, kwargs = arrays(op, (4, 6, 3), np.float32, 5, (True, True, False, False), "C")
    call(op, args, kwargs)
    x = args[0].copy()
    want = call(op, (x,) + args[1:], kwargs | dict(out=None))
    for _ in range(2):
        xin = x.copy()
        got = call(op, (xin,) + args[1:], kwargs | dict(out=xin))
        same(got, want)
        np.testing.assert_array_equal(xin, want[0] if isinstance(want, tuple) else want)


def test_read_only_out_is_refused_after_writable_ones():
    x = normal((6, 4), np.float32, seed=1)
    out = np.empty_like(x)
    nbnorm.batch_norm_forward(x, axis=0, out=out)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nbnorm.batch_norm_forward(x, axis=0, out=out)


def test_scalars_of_equal_value_and_other_type_or_sign_are_other_signatures():
    """``eps=0`` (int) and ``-0.0`` are not ``0.0``'s prepared call; each
    gives what a first call with it gives."""
    x = normal((5, 3), np.float64, seed=2)
    x[:, 1] = 7.0                               # a constant channel: invstd = 1/√eps
    first = nbnorm.batch_norm_forward(x, axis=0, eps=0.0)
    for eps in (0, -0.0, False):
        _calls.calls.clear()
        try:
            want = nbnorm.batch_norm_forward(x, axis=0, eps=eps)
        except TypeError as e:
            with pytest.raises(TypeError, match=str(e)[:20]):
                nbnorm.batch_norm_forward(x, axis=0, eps=0.0)
                nbnorm.batch_norm_forward(x, axis=0, eps=eps)
            continue
        nbnorm.batch_norm_forward(x, axis=0, eps=0.0)
        same(nbnorm.batch_norm_forward(x, axis=0, eps=eps), want)
    same(nbnorm.batch_norm_forward(x, axis=0, eps=0.0), first)


def test_non_finite_running_statistics_warn_on_every_prepared_call():
    x = normal((6, 3), np.float32, seed=3)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    nbnorm.batch_norm_forward(x, axis=0, running_mean=rm, running_var=rv)
    x[0, 1] = np.nan
    for _ in range(2):
        before = rm.copy()
        with pytest.warns(RuntimeWarning, match="non-finite"):
            nbnorm.batch_norm_forward(x, axis=0, running_mean=rm, running_var=rv)
        assert rm[1] == before[1] and rm[0] != before[0]


def test_prepared_calls_hold_no_arrays():
    """The memo keeps signatures and plans, never the arrays of a call."""
    import gc
    import weakref
    x = normal((64, 8), np.float32, seed=4)
    ref = weakref.ref(x)
    for op in ("batch_norm_forward", "layer_norm"):
        getattr(nbnorm, op)(x, axis=0 if op.startswith("batch") else -1)
    del x
    gc.collect()
    assert ref() is None
    assert len(_calls.calls) == 2
