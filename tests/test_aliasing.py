"""Outputs that alias inputs, and inputs that are arrays of unusual kinds.

Every array written in place (``out``, ``running_mean``, ``running_var``)
must share no memory with any other argument, except ``out`` being exactly
``x`` (or ``dy``): anything else raises ``ValueError`` and writes nothing.
Overlap is decided exactly, so interleaved disjoint views are accepted.
Masked arrays are refused, ``np.matrix``, byte-swapped data and tensors that
require grad are read as the arrays they are.
"""
from __future__ import annotations

import numpy as np
import pytest

import nbnorm

from helpers import normal

SHAPE = (6, 3, 4)
AXIS = (0, 2)
STAT = (3,)


def fresh(seed=0, dtype=np.float64):
    """Arguments of every function (statistic-shaped ones positive)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(SHAPE) * 2 + 1).astype(dtype)
    return dict(x=x, dy=rng.standard_normal(SHAPE).astype(dtype),
                weight=rng.uniform(0.5, 2, STAT), bias=rng.standard_normal(STAT),
                mean=rng.standard_normal(STAT), var=rng.uniform(0.5, 2, STAT),
                invstd=rng.uniform(0.5, 2, STAT),
                out=np.full(SHAPE, 7.0, dtype), running_mean=np.full(STAT, 2.0),
                running_var=np.full(STAT, 3.0))


CALLS = {
    "forward": (lambda a: nbnorm.batch_norm_forward(
        a["x"], a["weight"], a["bias"], axis=AXIS, running_mean=a["running_mean"],
        running_var=a["running_var"], out=a["out"]),
        ("x", "weight", "bias", "out", "running_mean", "running_var")),
    "inference": (lambda a: nbnorm.batch_norm_inference(
        a["x"], a["mean"], a["var"], a["weight"], a["bias"], axis=AXIS, out=a["out"]),
        ("x", "mean", "var", "weight", "bias", "out")),
    "backward": (lambda a: nbnorm.batch_norm_backward(
        a["dy"], a["x"], a["mean"], a["invstd"], a["weight"], axis=AXIS, out=a["out"]),
        ("dy", "x", "mean", "invstd", "weight", "out")),
}
OUTPUTS = ("out", "running_mean", "running_var")


def alias_into(args, written, other):
    """Make ``args[other]`` a view into the memory of ``args[written]``
    that overlaps it without being the same view."""
    w = args[written]
    shape = args[other].shape
    if w.shape == shape:            # same shape: shifted by one element
        buf = np.empty(w.size + 1)
        buf[:w.size] = w.reshape(-1)
        buf[w.size] = buf[0]
        args[written] = buf[:w.size].reshape(shape)
        args[other] = buf[1:].reshape(shape)
        args[other][...] = np.abs(args[other]) + 0.5
    elif w.size >= int(np.prod(shape)):   # a statistic inside a full-size array
        args[other] = w.reshape(-1)[:int(np.prod(shape))].reshape(shape)
    else:                           # a full-size array containing a statistic
        args[written] = args[other].reshape(-1)[:w.size].reshape(w.shape)


PAIRS = [(op, written, other) for op, (_, names) in CALLS.items()
         for written in OUTPUTS if written in names
         for other in names if other != written]


@pytest.mark.parametrize("op,written,other", PAIRS)
def test_overlapping_output_is_refused_and_nothing_is_written(op, written, other):
    call, names = CALLS[op]
    args = fresh()
    alias_into(args, written, other)
    before = {k: np.array(args[k], copy=True) for k in names}
    with pytest.raises(ValueError, match=rf"({written}: shares memory with {other}|"
                                         rf"{other}: shares memory with {written})"):
        call(args)
    for k in names:
        np.testing.assert_array_equal(args[k], before[k], err_msg=f"{k} was modified")


def test_issue_example_out_is_x_and_mean_is_a_row_of_x():
    x = np.arange(12.0).reshape(4, 3)
    keep = x.copy()
    with pytest.raises(ValueError, match="out: shares memory with mean"):
        nbnorm.batch_norm_inference(x, x[0], np.ones(3), axis=0, out=x)
    np.testing.assert_array_equal(x, keep)


def test_running_mean_is_running_var_is_refused():
    r = np.zeros(3)
    with pytest.raises(ValueError, match="running_mean: shares memory with running_var"):
        nbnorm.batch_norm_forward(fresh()["x"], axis=AXIS, running_mean=r, running_var=r)
    assert (r == 0).all()


@pytest.mark.parametrize("op,in_place", [("forward", "x"), ("inference", "x"),
                                         ("backward", "dy"), ("backward", "x")])
def test_exact_alias_in_place_equals_out_of_place(op, in_place):
    call, _ = CALLS[op]
    args = fresh(seed=1)
    want = call({**fresh(seed=1), "out": None})
    args["out"] = args[in_place]
    got = call(args)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("op", list(CALLS))
@pytest.mark.parametrize("interleave", ["complex", "strided"])
def test_interleaved_disjoint_out_is_accepted(op, interleave):
    call, _ = CALLS[op]
    args = fresh(seed=2)
    want = call({**fresh(seed=2), "out": None})
    if interleave == "complex":
        z = np.empty(SHAPE, np.complex128)
        z.real = args["x"]
        args["x"], args["out"] = z.real, z.imag
    else:
        buf = np.empty(2 * args["x"].size)
        buf[0::2] = args["x"].reshape(-1)
        args["x"], args["out"] = buf[0::2].reshape(SHAPE), buf[1::2].reshape(SHAPE)
    got = call(args)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(g, w, rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------- array kinds
@pytest.mark.parametrize("name", ["x", "weight", "out", "running_mean"])
def test_masked_arrays_are_refused_even_after_a_plain_call(name):
    args = fresh(seed=3)
    nbnorm.moments(args["x"], AXIS)   # the kernel is compiled and cached for plain arrays
    a = args[name]
    args[name] = np.ma.masked_array(a, mask=np.zeros(a.shape, bool))
    with pytest.raises(TypeError, match=rf"{name}: masked arrays are not supported"):
        CALLS["forward"][0](args)
    with pytest.raises(TypeError, match="x: masked arrays are not supported"):
        nbnorm.moments(np.ma.masked_array([1.0, 2.0, 100.0], mask=[0, 0, 1]))


@pytest.mark.parametrize("name", ["out", "running_mean", "running_var"])
def test_lists_as_in_place_targets_are_refused(name):
    args = fresh(seed=4)
    args[name] = args[name].tolist()
    with pytest.raises(TypeError, match=rf"{name}: expected a NumPy array \(it is written in place\)"):
        CALLS["forward"][0](args)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_is_read_as_its_array():
    m = np.matrix(normal((5, 4), np.float64, seed=5))
    for got, want in zip(nbnorm.moments(m, 0), nbnorm.moments(np.asarray(m), 0)):
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, want)
    out = np.matrix(np.zeros((5, 4)))
    y, _, _ = nbnorm.batch_norm_forward(m, axis=0, out=out)
    np.testing.assert_array_equal(np.asarray(out), nbnorm.batch_norm_forward(np.asarray(m), axis=0)[0])


def test_unreadable_object_is_a_type_error_naming_the_argument():
    class Broken:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("cannot export")

    with pytest.raises(TypeError, match="weight: expected an array, got Broken"):
        nbnorm.batch_norm_forward(fresh()["x"], Broken(), axis=AXIS)


def test_torch_parameter_weight_is_read_through_detach():
    torch = pytest.importorskip("torch")
    args = fresh(seed=6)
    w = torch.nn.Parameter(torch.from_numpy(args["weight"].copy()))
    got = nbnorm.batch_norm_forward(args["x"], w, axis=AXIS)
    want = nbnorm.batch_norm_forward(args["x"], args["weight"], axis=AXIS)
    for g, v in zip(got, want):
        np.testing.assert_array_equal(g, v)
    with pytest.raises(TypeError, match="running_mean: expected a NumPy array"):
        nbnorm.batch_norm_forward(args["x"], axis=AXIS, running_mean=torch.zeros(3),
                                  running_var=torch.ones(3))


@pytest.mark.parametrize("code", ["f2", "f4", "f8"])
def test_byte_swapped_arrays_compute_as_native_ones(code):
    native = fresh(seed=7, dtype=np.dtype(code))
    swapped = {k: v.astype(v.dtype.newbyteorder(">" if np.little_endian else "<"))
               for k, v in native.items()}
    for op, (call, names) in CALLS.items():
        a_native = {k: np.array(v, copy=True) for k, v in native.items()}
        a_swapped = {k: np.array(v, copy=True) for k, v in swapped.items()}
        want, got = call(a_native), call(a_swapped)
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            np.testing.assert_array_equal(g, w, err_msg=op)
        for k in OUTPUTS:
            if k in names:
                np.testing.assert_array_equal(a_swapped[k], a_native[k], err_msg=f"{op} {k}")
    for got, want in zip(nbnorm.moments(swapped["x"], AXIS), nbnorm.moments(native["x"], AXIS)):
        np.testing.assert_array_equal(got, want)


class DeviceLike:
    """An object describing device memory by ``__cuda_array_interface__`` only."""

    def __init__(self, ptr, shape, strides=None, typestr="<f4"):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": shape,
                                         "strides": strides, "typestr": typestr, "version": 3}


def test_device_arrays_are_checked_by_their_addresses():
    """The overlap rules hold for device arrays: decided from the pointers,
    shapes and strides of ``__cuda_array_interface__`` (nothing is read)."""
    from nbnorm._validate import no_aliasing

    base = 1 << 40
    x = DeviceLike(base, (4, 8))
    no_aliasing({"out": DeviceLike(base, (4, 8))}, {"x": x}, [("out", "x")])       # in place
    no_aliasing({"out": DeviceLike(base + 128, (4, 8))}, {"x": x}, [("out", "x")])  # after x
    no_aliasing({"out": DeviceLike(base + 4, (4, 8), (64, 8))},                     # interleaved
                {"x": DeviceLike(base, (4, 8), (64, 8))}, [("out", "x")])
    with pytest.raises(ValueError, match="out: shares memory with x"):
        no_aliasing({"out": DeviceLike(base + 4, (4, 8))}, {"x": x}, [("out", "x")])
    with pytest.raises(ValueError, match="out: shares memory with mean"):
        no_aliasing({"out": DeviceLike(base, (4, 8))}, {"x": x, "mean": DeviceLike(base, (8,))},
                    [("out", "x")])


@pytest.mark.parametrize("shape,axis", [((4, 80, 6, 6), (0, 2, 3)), ((3, 5, 7), (0, 2)),
                                        ((2000, 3), 0), ((3, 70000), 1)])
def test_statistics_do_not_depend_on_the_layout_of_out(shape, axis):
    """mean/invstd (forward) and dweight/dbias (backward) are bitwise the same
    whether the output is fresh, C-ordered, F-ordered, reversed or in place,
    for x with positive and with negative strides."""
    rng = np.random.default_rng(8)
    values = rng.standard_normal(shape) * 3 + 5
    dy = rng.standard_normal(shape)
    makers = [lambda: np.array(values, copy=True),                    # C order
              lambda: np.flip(np.array(np.flip(values, 0), copy=True), 0)]  # reversed
    for make in makers:
        x = make()
        want = nbnorm.batch_norm_forward(x, axis=axis)[1:]
        grads = nbnorm.batch_norm_backward(dy, x, *want, axis=axis)[1:]
        outs = [np.empty(shape), np.empty(shape, order="F"), np.flip(np.empty(shape), 0)]
        for out in outs:
            for g, w in zip(nbnorm.batch_norm_forward(x, axis=axis, out=out)[1:], want):
                np.testing.assert_array_equal(g, w)
            for g, w in zip(nbnorm.batch_norm_backward(dy, x, *want, axis=axis, out=out)[1:], grads):
                np.testing.assert_array_equal(g, w)
        in_place = make()
        for g, w in zip(nbnorm.batch_norm_forward(in_place, axis=axis, out=in_place)[1:], want):
            np.testing.assert_array_equal(g, w)
