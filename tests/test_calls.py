"""Remembered call signatures (nbnorm._calls): a repeated ``moments`` call on
a plain NumPy array skips routing and validation — and must still compute
from the data it is given, check every argument a signature does not vouch
for, and warn where the first call warned."""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nbnorm
from nbnorm import _calls
from nbnorm import reference as R

from helpers import assert_within, moments_bound, normal
from strategies import reduction_cases


@pytest.fixture(autouse=True)
def empty_memo():
    _calls.moments_calls.clear()
    yield
    _calls.moments_calls.clear()


def check(x, axis, ddof=0, keepdims=False):
    mean, var = nbnorm.moments(x, axis, ddof=ddof, keepdims=keepdims)
    mr, vr = R.moments(x, axis, ddof=ddof, keepdims=keepdims)
    mb, vb = moments_bound(x, axis, mr, vr, ddof)
    assert_within(mean, mr, mb, f"mean {x.shape} {x.strides} {axis}")
    assert_within(var, vr, vb, f"var {x.shape} {x.strides} {axis}")
    return mean, var


def same_layout(x, seed):
    """A new exact ``np.ndarray`` of ``x``'s shape, strides and dtype, other values."""
    lo = sum(min(0, (n - 1) * s) for n, s in zip(x.shape, x.strides))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(x.shape, x.strides)) + x.itemsize
    buf = np.empty(hi - lo + x.itemsize, np.uint8)
    y = np.ndarray(x.shape, x.dtype, buffer=buf, offset=-lo, strides=x.strides)
    y[...] = normal(x.shape, x.dtype, seed=seed, loc=5.0, scale=2.0)
    return y


class Routed:
    """Counts the calls that were routed and validated (``_api._setup``)."""

    def __init__(self, monkeypatch):
        from nbnorm import _api
        self.calls = 0
        setup = _api._setup

        def counted(*args, **kwargs):
            self.calls += 1
            return setup(*args, **kwargs)
        monkeypatch.setattr(_api, "_setup", counted)


@settings(max_examples=40, deadline=None)
@given(case=reduction_cases(allow_none=True, allow_empty=False), ddof=st.sampled_from([0, 1]),
       keepdims=st.booleans(), seed=st.integers(0, 2**16))
def test_a_remembered_call_computes_from_the_new_data(case, ddof, keepdims, seed):
    """Two arrays of one signature (shape, strides, dtype): the second call
    skips routing and gives the second array's statistics, bitwise those
    of a call that routes and validates afresh."""
    x, axis = case
    n = int(np.prod([x.shape[d] for d in range(x.ndim) if axis is None or d in
                     np.atleast_1d(np.array(axis)) % max(x.ndim, 1)]))
    if n - ddof <= 0:
        return
    _calls.moments_calls.clear()
    x2 = same_layout(x, seed)
    with pytest.MonkeyPatch.context() as mp:
        routed = Routed(mp)
        check(x, axis, ddof, keepdims)
        got = check(x2, axis, ddof, keepdims)
        assert routed.calls == (1 if x.dtype.isnative else 2), (x.dtype, x.strides, axis)
    _calls.moments_calls.clear()
    fresh = nbnorm.moments(x2, axis, ddof=ddof, keepdims=keepdims)
    for a, b in zip(got, fresh):
        np.testing.assert_array_equal(a, b)


def test_strides_and_dtype_are_part_of_the_signature():
    x = normal((6, 5, 4), np.float32, seed=1)
    check(x, (0, 2))
    check(np.transpose(x, (0, 2, 1)).copy().transpose(0, 2, 1), (0, 2))   # other strides
    check(x[:, ::-1], (0, 2))
    check(x.astype(np.float64), (0, 2))
    assert len(_calls.moments_calls) == 4


@pytest.mark.parametrize("bad,error", [
    (dict(axis=(0.0, 1)), TypeError), (dict(axis=1.0), TypeError),
    (dict(axis=(0, 3)), nbnorm.AxisError), (dict(ddof=True), TypeError),
    (dict(ddof="1"), TypeError), (dict(axis=(0, 0)), ValueError)])
def test_arguments_a_signature_does_not_vouch_for_are_still_checked(bad, error):
    """After valid calls of the same array with ``axis=(0, 1)``/``1``/``0``
    and ``ddof=1``, arguments equal to those under ``==`` (``0.0 == 0``,
    ``True == 1``) or invalid are refused as on a first call."""
    x = normal((4, 5, 6), seed=3)
    for axis, ddof in (((0, 1), 0), (1, 0), ((0, 1), 1)):
        nbnorm.moments(x, axis, ddof=ddof)
    args = dict(axis=(0, 1), ddof=0) | bad
    with pytest.raises(error):
        nbnorm.moments(x, args["axis"], ddof=args["ddof"])


def test_equal_arguments_of_other_types_give_the_same_answer():
    x = normal((4, 5, 6), seed=4)
    first = nbnorm.moments(x, (0, 2), ddof=1, keepdims=True)
    for axis, ddof, keepdims in (([0, 2], 1, True), ((np.int64(0), 2), 1, 1),
                                 ((0, -1), 1.0, np.True_)):
        got = nbnorm.moments(x, axis, ddof=ddof, keepdims=keepdims)
        for a, b in zip(got, first):
            np.testing.assert_array_equal(a, b)


def test_converted_and_subclassed_input_is_not_remembered():
    x = normal((5, 7), seed=5)
    for arg in (x.astype(">f8"), x.astype(np.int32), np.asmatrix(x), np.ma.masked_array(x)[:0]):
        try:
            nbnorm.moments(arg, 0)
            nbnorm.moments(arg, 0)
        except TypeError:
            pass    # masked arrays are refused every time
    assert len(_calls.moments_calls) == 0
    check(x.astype(">f8"), 0)


def test_a_call_that_warns_warns_every_time():
    x = normal((3, 4), seed=6)
    for _ in range(3):
        with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
            nbnorm.moments(x, 0, ddof=3)
    for _ in range(3):
        with pytest.warns(RuntimeWarning, match="Mean of empty slice"):
            nbnorm.moments(np.empty((0, 4)), 0)
    assert len(_calls.moments_calls) == 0


def test_the_memo_is_bounded_and_released():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in range(_calls.SIZE + 10):
            check(normal((n + 2, 3), np.float32, seed=n), 0)
    assert len(_calls.moments_calls) == _calls.SIZE
    nbnorm.release_memory()
    assert len(_calls.moments_calls) == 0


def test_threads_share_the_memo():
    """Eight threads, each its own signatures and data, repeatedly: every
    result is its own array's."""
    errors = []

    def work(t):
        try:
            for i in range(40):
                x = normal((3 + (t * 40 + i) % 90, 4), seed=t * 1000 + i)
                mean, var = nbnorm.moments(x, 0)
                np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(var, x.var(0), rtol=1e-12, atol=1e-12)
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors[0]
    assert len(_calls.moments_calls) <= _calls.SIZE


_FORK_WHILE_HELD = """
import os, threading, numpy as np, nbnorm
from nbnorm._calls import moments_calls
held, go = threading.Event(), threading.Event()
def hold():
    with moments_calls._lock:
        held.set(); go.wait()
t = threading.Thread(target=hold); t.start(); held.wait()
pid = os.fork()
if pid == 0:
    x = np.ones((3, 4))
    nbnorm.moments(x, 0); nbnorm.moments(x, 0); nbnorm.release_memory()
    os._exit(0)
go.set(); t.join()
with moments_calls._lock:          # re-entry on this thread (as from a signal handler)
    nbnorm.release_memory()
print("child", os.waitpid(pid, 0)[1])
"""


def test_remembered_calls_survive_fork_and_reentry():
    """A child forked while another thread holds the memo's lock, and a
    ``release_memory()`` re-entering it on the same thread, never hang."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", _FORK_WHILE_HELD], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "child 0" in run.stdout, run.stdout + run.stderr[-2000:]
