"""Written arguments whose elements overlap one another (a zero or
overlapping stride) are refused before anything is written: threads would
race on a shared element and ``out=x`` would transform it several times.

``_validate.self_overlapping`` is checked against a byte-by-byte count over
random layouts; every public function with a written argument refuses such
an ``out``/``running_*`` (``ValueError`` naming it) and leaves the memory as
it was."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numpy.lib.stride_tricks import as_strided

import nbnorm
from nbnorm import _validate as V

SHAPE = (4, 3, 6)
BN = (0, 2)


def _bytes_overlap(a):
    """Brute force: does any byte belong to two elements?"""
    base = a.__array_interface__["data"][0]
    seen = set()
    for idx in np.ndindex(a.shape):
        start = base + sum(i * s for i, s in zip(idx, a.strides))
        for b in range(start, start + a.itemsize):
            if b in seen:
                return True
            seen.add(b)
    return False


@settings(max_examples=100, deadline=None)
@given(itemsize=st.sampled_from([1, 2, 4, 8]),
       dims=st.lists(st.tuples(st.integers(0, 4), st.integers(-12, 12)), min_size=0, max_size=3))
def test_self_overlap_matches_a_byte_count(itemsize, dims):
    shape = tuple(n for n, _ in dims)
    strides = tuple(s for _, s in dims)
    buf = np.zeros(512, np.uint8)
    # start in the middle so that negative strides stay inside the buffer
    start = buf[256:].view(np.dtype(f"V{itemsize}")) if itemsize > 1 else buf[256:]
    a = as_strided(start, shape, strides, writeable=False)
    assert V.self_overlapping(a) == _bytes_overlap(a)


def test_large_undecidable_layout_counts_as_overlapping(monkeypatch):
    a = as_strided(np.zeros(64, np.float32), (3, 3), (8, 12))      # disjoint, interleaved
    assert not V.self_overlapping(a)
    monkeypatch.setattr(V, "EXACT_ELEMENTS", 4)
    assert V.self_overlapping(a)


def _args(seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.standard_normal(SHAPE) + 1, dy=rng.standard_normal(SHAPE),
                w3=rng.uniform(0.5, 2, 3), w6=rng.uniform(0.5, 2, 6), stat=rng.uniform(0.5, 2, 3))


def _overlapping(shape, how):
    """A writeable view of ``shape`` whose elements share memory, and its buffer."""
    buf = np.full(4 * int(np.prod(shape)) + 8, 5.0)
    if how == "zero":                 # a writeable broadcast: last axis stride 0
        strides = tuple(8 * int(np.prod(shape[i + 1:-1])) for i in range(len(shape) - 1)) + (0,)
    elif len(shape) > 1:              # rows that overlap their neighbours
        strides = (8,) * len(shape)
    else:                             # elements that overlap their neighbours
        strides = (4,)
    return as_strided(buf, shape, strides, writeable=True), buf


def _stats(a):
    m, v = nbnorm.moments(a["x"], BN)
    return m, 1 / np.sqrt(v + 1e-5)


CALLS = {
    "batch_norm_forward/out": lambda a, o: nbnorm.batch_norm_forward(a["x"], axis=BN, out=o),
    "batch_norm_forward/running_mean": lambda a, o: nbnorm.batch_norm_forward(
        a["x"], axis=BN, running_mean=o, running_var=np.ones(3)),
    "batch_norm_forward/running_var": lambda a, o: nbnorm.batch_norm_forward(
        a["x"], axis=BN, running_mean=np.zeros(3), running_var=o),
    "batch_norm_inference/out": lambda a, o: nbnorm.batch_norm_inference(
        a["x"], a["stat"], a["stat"], axis=BN, out=o),
    "batch_norm_backward/out": lambda a, o: nbnorm.batch_norm_backward(
        a["dy"], a["x"], *_stats(a), axis=BN, out=o),
    "layer_norm/out": lambda a, o: nbnorm.layer_norm(a["x"], out=o),
    "layer_norm_backward/out": lambda a, o: nbnorm.layer_norm_backward(
        a["dy"], a["x"], *nbnorm.layer_norm(a["x"])[1:], out=o),
    "rms_norm/out": lambda a, o: nbnorm.rms_norm(a["x"], out=o),
    "rms_norm_backward/out": lambda a, o: nbnorm.rms_norm_backward(
        a["dy"], a["x"], nbnorm.rms_norm(a["x"])[1], out=o),
    "group_norm/out": lambda a, o: nbnorm.group_norm(a["x"], 3, out=o),
    "group_norm_backward/out": lambda a, o: nbnorm.group_norm_backward(
        a["dy"], a["x"], *nbnorm.group_norm(a["x"], 3)[1:], 3, out=o),
    "instance_norm/out": lambda a, o: nbnorm.instance_norm(a["x"], out=o),
    "instance_norm/running_mean": lambda a, o: nbnorm.instance_norm(
        a["x"], running_mean=o, running_var=np.ones(3)),
    "instance_norm_backward/out": lambda a, o: nbnorm.instance_norm_backward(
        a["dy"], a["x"], *nbnorm.instance_norm(a["x"])[1:], out=o),
}


@pytest.mark.parametrize("how", ["zero", "overlap"])
@pytest.mark.parametrize("case", list(CALLS))
def test_self_overlapping_written_argument_is_refused_untouched(case, how):
    name = case.split("/")[1]
    shape = SHAPE if name == "out" else (3,)
    target, buf = _overlapping(shape, how)
    before = buf.copy()
    with pytest.raises(ValueError, match=f"^{name}: its elements overlap"):
        CALLS[case](_args(), target)
    np.testing.assert_array_equal(buf, before)


@pytest.mark.parametrize("op", ["batch_norm_forward", "layer_norm", "batch_norm_inference"])
def test_out_is_a_self_overlapping_x(op):
    """``out=x`` is allowed only for an ``x`` whose elements are distinct."""
    x, buf = _overlapping(SHAPE, "overlap")
    before = buf.copy()
    call = {"batch_norm_forward": lambda: nbnorm.batch_norm_forward(x, axis=BN, out=x),
            "layer_norm": lambda: nbnorm.layer_norm(x, out=x),
            "batch_norm_inference": lambda: nbnorm.batch_norm_inference(
                x, np.zeros(3), np.ones(3), axis=BN, out=x)}[op]
    with pytest.raises(ValueError, match="^out: its elements overlap"):
        call()
    np.testing.assert_array_equal(buf, before)
    # reading a self-overlapping x (not written) stays allowed
    nbnorm.layer_norm(x)


def test_device_arrays_are_checked_by_their_interface():
    """A written device array (``__cuda_array_interface__``) with a zero stride
    is refused by the same rule, without touching the device."""
    class Device:
        __cuda_array_interface__ = {"shape": (4, 3), "strides": (12, 0), "typestr": "<f4",
                                    "data": (1 << 20, False), "version": 3}
    with pytest.raises(ValueError, match="^out: its elements overlap"):
        V.writable(Device(), "out")
    Device.__cuda_array_interface__ = {**Device.__cuda_array_interface__, "strides": (12, 4)}
    V.writable(Device(), "out")
