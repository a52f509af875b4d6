"""Bad inputs: exception type, a message naming the argument, and no writes."""
from __future__ import annotations

import numpy as np
import pytest

import nbnorm
from nbnorm import AxisError

X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) % 5


def guarded():
    """out and running stats (with sentinel contents) that must survive a failed call."""
    return dict(out=np.full(X.shape, 7.0, np.float32),
                running_mean=np.full(3, 2.0, np.float32), running_var=np.full(3, 3.0, np.float32))


def assert_untouched(g):
    assert (g["out"] == 7.0).all()
    assert (g["running_mean"] == 2.0).all() and (g["running_var"] == 3.0).all()


def forward_raises(exc, match, x=X, **kw):
    g = guarded()
    args = {**g, **kw}
    before = np.array(x, copy=True) if isinstance(x, np.ndarray) else None
    with pytest.raises(exc, match=match):
        nbnorm.batch_norm_forward(x, axis=args.pop("axis", (0, 2)), **args)
    assert_untouched(g)
    if before is not None:
        np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype,name", [(np.complex64, "complex64"), (object, "object"),
                                        ("U3", "<U3"), ("datetime64[s]", "datetime64"),
                                        (np.int32, "int32")])
def test_forward_unsupported_x_dtype(dtype, name):
    forward_raises(TypeError, rf"x: unsupported dtype {name}", x=np.zeros((2, 3, 4), dtype))


@pytest.mark.parametrize("dtype,name", [(np.complex128, "complex128"), (object, "object"),
                                        ("U3", "<U3"), ("datetime64[s]", "datetime64")])
def test_moments_unsupported_dtype(dtype, name):
    with pytest.raises(TypeError, match=rf"x: unsupported dtype {name}"):
        nbnorm.moments(np.zeros((2, 3), dtype), 0)


@pytest.mark.parametrize("arg", ["weight", "bias", "running_mean", "running_var"])
def test_forward_bad_stat_dtype(arg):
    forward_raises(TypeError, rf"{arg}: unsupported dtype complex64", **{arg: np.zeros(3, np.complex64)})


@pytest.mark.parametrize("arg", ["weight", "bias", "running_mean", "running_var"])
def test_forward_bad_stat_shape_names_expected_and_got(arg):
    forward_raises(ValueError, rf"{arg}: expected shape \(3,\).*got \(4,\)",
                   **{arg: np.zeros(4, np.float32)})


def test_forward_torch_style_keepdims_weight_rejected():
    forward_raises(ValueError, r"weight: expected shape \(3,\).*got \(1, 3, 1\)",
                   weight=np.ones((1, 3, 1), np.float32))


@pytest.mark.parametrize("out,match", [
    (np.zeros((2, 3, 5), np.float32), r"out: expected shape \(2, 3, 4\).*got \(2, 3, 5\)"),
    (np.zeros((2, 3, 4), np.float64), r"out: expected dtype float32.*got float64"),
])
def test_forward_bad_out(out, match):
    forward_raises(ValueError, match, out=out)


def test_read_only_out_and_running_stats():
    ro = np.zeros(X.shape, np.float32)
    ro.flags.writeable = False
    forward_raises(ValueError, r"out: the array is read-only", out=ro)
    rm = np.zeros(3, np.float32)
    rm.flags.writeable = False
    forward_raises(ValueError, r"running_mean: the array is read-only", running_mean=rm)
    rv = np.zeros(3, np.float32)
    rv.flags.writeable = False
    forward_raises(ValueError, r"running_var: the array is read-only", running_var=rv)
    with pytest.raises(ValueError, match="out: the array is read-only"):
        nbnorm.batch_norm_inference(X, np.zeros(3), np.ones(3), axis=(0, 2), out=ro)
    with pytest.raises(ValueError, match="out: the array is read-only"):
        nbnorm.batch_norm_backward(X, X, np.zeros(3), np.ones(3), axis=(0, 2), out=ro)


def test_only_one_running_stat():
    g = guarded()
    with pytest.raises(ValueError, match="running_mean, running_var"):
        nbnorm.batch_norm_forward(X, axis=(0, 2), running_mean=g["running_mean"], out=g["out"])
    assert_untouched(g)


@pytest.mark.parametrize("axis", [3, -4, (0, 5)])
def test_out_of_range_axis(axis):
    forward_raises(AxisError, "axis", axis=axis)
    with pytest.raises(AxisError):
        nbnorm.moments(X, axis)
    with pytest.raises(AxisError):
        nbnorm.batch_norm_inference(X, np.zeros(3), np.ones(3), axis=axis)


@pytest.mark.parametrize("axis", [(0, 0), (0, -3), (2, 0, -1)])
def test_duplicate_axes(axis):
    forward_raises(ValueError, "axis: duplicate", axis=axis)
    with pytest.raises(ValueError, match="axis: duplicate"):
        nbnorm.moments(X, axis)


def test_non_integer_axis():
    with pytest.raises(TypeError, match="axis"):
        nbnorm.moments(X, 1.0)
    forward_raises(TypeError, "axis", axis=(0, "2"))


@pytest.mark.parametrize("eps_", [-1e-5, float("nan"), float("inf")])
def test_bad_eps(eps_):
    forward_raises(ValueError, "eps", eps=eps_)
    with pytest.raises(ValueError, match="eps"):
        nbnorm.batch_norm_inference(X, np.zeros(3), np.ones(3), axis=(0, 2), eps=eps_)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_bad_momentum(momentum):
    forward_raises(ValueError, "momentum", momentum=momentum)


def test_non_numeric_eps_and_momentum():
    forward_raises(TypeError, "eps", eps="1e-5")
    forward_raises(TypeError, "momentum", momentum=None)


def test_fewer_than_two_values_per_statistic():
    forward_raises(ValueError, "more than 1 value per statistic.*got 1", x=X[:1], axis=0,
                   out=np.zeros((1, 3, 4), np.float32), running_mean=np.full((3, 4), 2.0, np.float32),
                   running_var=np.full((3, 4), 3.0, np.float32))
    with pytest.raises(ValueError, match="got 1"):
        nbnorm.batch_norm_forward(X, axis=())


def test_zero_size_forward_and_backward():
    z = np.zeros((0, 3, 4), np.float32)
    with pytest.raises(ValueError, match="x: zero-size"):
        nbnorm.batch_norm_forward(z, axis=(0, 2))
    with pytest.raises(ValueError, match="x: zero-size"):
        nbnorm.batch_norm_backward(z, z, np.zeros(3), np.ones(3), axis=(0, 2))


def test_inference_missing_and_bad_statistics():
    out = np.full(X.shape, 7.0, np.float32)
    with pytest.raises(TypeError, match="var is required"):
        nbnorm.batch_norm_inference(X, np.zeros(3), None, axis=(0, 2), out=out)
    with pytest.raises(ValueError, match=r"mean: expected shape \(3,\).*got \(2,\)"):
        nbnorm.batch_norm_inference(X, np.zeros(2), np.ones(3), axis=(0, 2), out=out)
    with pytest.raises(TypeError, match="var: unsupported dtype complex128"):
        nbnorm.batch_norm_inference(X, np.zeros(3), np.ones(3, complex), axis=(0, 2), out=out)
    assert (out == 7.0).all()


def test_backward_bad_arguments():
    out = np.full(X.shape, 7.0, np.float32)
    m, i = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3, 4\).*got \(2, 3\)"):
        nbnorm.batch_norm_backward(X[..., 0], X, m, i, axis=(0, 2), out=out)
    with pytest.raises(TypeError, match="dy: expected dtype float32"):
        nbnorm.batch_norm_backward(X.astype(np.float64), X, m, i, axis=(0, 2), out=out)
    with pytest.raises(TypeError, match="dy: unsupported dtype complex64"):
        nbnorm.batch_norm_backward(X.astype(np.complex64), X, m, i, axis=(0, 2), out=out)
    with pytest.raises(ValueError, match=r"invstd: expected shape \(3,\)"):
        nbnorm.batch_norm_backward(X, X, m, np.ones(4), axis=(0, 2), out=out)
    with pytest.raises(ValueError, match=r"weight: expected shape \(3,\)"):
        nbnorm.batch_norm_backward(X, X, m, i, np.ones(2), axis=(0, 2), out=out)
    with pytest.raises(TypeError, match="invstd is required"):
        nbnorm.batch_norm_backward(X, X, m, None, axis=(0, 2), out=out)
    with pytest.raises(TypeError, match="dy is required"):
        nbnorm.batch_norm_backward(None, X, m, i, axis=(0, 2), out=out)
    with pytest.raises(ValueError, match=r"out: expected shape"):
        nbnorm.batch_norm_backward(X, X, m, i, axis=(0, 2), out=out[:1])
    assert (out == 7.0).all()


def test_out_partially_overlapping_x_is_rejected():
    buf = np.zeros(30, np.float32)
    x = buf[:24].reshape(2, 3, 4)
    x[...] = X
    g = guarded()
    with pytest.raises(ValueError, match="out: shares memory with x"):
        nbnorm.batch_norm_forward(x, axis=(0, 2), out=buf[1:25].reshape(2, 3, 4),
                                  running_mean=g["running_mean"], running_var=g["running_var"])
    assert (g["running_mean"] == 2.0).all() and (g["running_var"] == 3.0).all()
    np.testing.assert_array_equal(buf[:24].reshape(2, 3, 4), X)


def test_x_none():
    with pytest.raises(TypeError, match="x is required"):
        nbnorm.moments(None)


def test_bool_ddof_rejected():
    with pytest.raises(TypeError, match="ddof"):
        nbnorm.moments(X, 0, ddof=True)
