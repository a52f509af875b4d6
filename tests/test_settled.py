"""Corner cases of the API contract, settled (docs/guide/batch_norm.md, "Errors"): the ``out``
object given is the object returned (a ``np.memmap`` stays one); ``ddof``
beyond the count follows NumPy (``np.var``: ``M2/0``, inf or NaN;
``np.nanvar`` for ``skipna`` and for states, which count their values: NaN);
``eps=0`` on a constant channel is 0/0: ``invstd`` inf and ``y`` NaN, as
in NumPy and PyTorch."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbnorm

X = np.arange(24, dtype=np.float32).reshape(4, 6) % 5


def _memmap(tmp_path):
    return np.memmap(tmp_path / "out.dat", dtype=np.float32, mode="w+", shape=X.shape)


CALLS = {
    "batch_norm_forward": lambda out: nbnorm.batch_norm_forward(X, axis=0, out=out)[0],
    "batch_norm_inference": lambda out: nbnorm.batch_norm_inference(
        X, np.zeros(6), np.ones(6), axis=0, out=out),
    "batch_norm_backward": lambda out: nbnorm.batch_norm_backward(
        X, X, np.zeros(6), np.ones(6), axis=0, out=out)[0],
    "layer_norm": lambda out: nbnorm.layer_norm(X, out=out)[0],
    "layer_norm_backward": lambda out: nbnorm.layer_norm_backward(
        X, X, *nbnorm.layer_norm(X)[1:], out=out)[0],
    "rms_norm": lambda out: nbnorm.rms_norm(X, out=out)[0],
    "group_norm": lambda out: nbnorm.group_norm(X.reshape(2, 4, 3), 2, out=out.reshape(2, 4, 3))[0],
    "instance_norm": lambda out: nbnorm.instance_norm(X.reshape(2, 4, 3),
                                                      out=out.reshape(2, 4, 3))[0],
}


@pytest.mark.parametrize("op", list(CALLS))
def test_the_out_object_is_returned(op, tmp_path):
    out = _memmap(tmp_path)
    if op in ("group_norm", "instance_norm"):
        out3 = out.reshape(2, 4, 3)
        call = {"group_norm": lambda: nbnorm.group_norm(X.reshape(2, 4, 3), 2, out=out3)[0],
                "instance_norm": lambda: nbnorm.instance_norm(X.reshape(2, 4, 3), out=out3)[0]}
        assert call[op]() is out3
    else:
        got = CALLS[op](out)
        assert got is out and isinstance(got, np.memmap)
    assert np.isfinite(np.asarray(out)).all() and np.asarray(out).any()


@pytest.mark.parametrize("ddof", [3, 4, 7])
@pytest.mark.parametrize("data", [[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
def test_ddof_at_or_beyond_the_count_follows_numpy(ddof, data):
    x = np.array(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want, want_nan = np.var(x, ddof=ddof), np.nanvar(x, ddof=ddof)
        got = nbnorm.moments(x, ddof=ddof)[1]
        got_nan = nbnorm.moments(x, ddof=ddof, skipna=True)[1]
        got_state = nbnorm.Moments.of(x).var(ddof=ddof)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_nan, want_nan)
    np.testing.assert_array_equal(got_state, want_nan)


@pytest.mark.parametrize("shape, axis", [((3, 70), 0), ((3, 2), 0)])   # fused / not
def test_eps_zero_on_a_constant_channel_is_nan_as_in_numpy(shape, axis):
    x = np.full(shape, 2.5)
    x[:, 1] = [1.0, 2.0, 3.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y, mean, invstd = nbnorm.batch_norm_forward(x, axis=axis, eps=0.0)
        ref = (x - x.mean(axis=0)) / x.std(axis=0)
    assert np.isinf(invstd[0]) and np.isnan(y[:, 0]).all()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_allclose(y[:, 1], ref[:, 1], rtol=1e-12)


def _field(shape, fill, seed=0):
    """A float32 field of a packed record array: strides of 5 bytes, no whole
    number of elements (NumPy makes these from record arrays)."""
    rec = np.zeros(int(np.prod(shape)), dtype=[("a", "<f4"), ("tag", "i1")])
    rec["a"] = fill if fill is not None else np.random.default_rng(seed).random(rec.size)
    rec["tag"] = 7
    strides = tuple(5 * int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return np.lib.stride_tricks.as_strided(rec["a"], shape, strides), rec


@pytest.mark.parametrize("op", ["forward", "inference", "backward", "layer_norm", "moments"])
def test_strides_of_no_whole_element_are_read_and_written(op):
    """Inputs whose strides are not multiples of the item size are converted
    once, outputs computed into a fresh array and copied; the neighbouring
    fields are left alone."""
    x, _ = _field((8, 5), None)
    out, rec = _field((8, 5), 0.0)
    plain = np.ascontiguousarray(x)
    calls = {
        "forward": lambda a, o: nbnorm.batch_norm_forward(a, axis=0, out=o)[0],
        "inference": lambda a, o: nbnorm.batch_norm_inference(a, np.ones(5), np.ones(5), axis=0,
                                                              out=o),
        "backward": lambda a, o: nbnorm.batch_norm_backward(a, a, np.zeros(5), np.ones(5),
                                                            axis=0, out=o)[0],
        "layer_norm": lambda a, o: nbnorm.layer_norm(a, out=o)[0],
        "moments": lambda a, o: nbnorm.moments(a, 0)[1],
    }
    want = calls[op](plain, None)
    got = calls[op](x, None if op == "moments" else out)
    np.testing.assert_array_equal(got, want)
    if op != "moments":
        assert got is out and (rec["tag"] == 7).all()
    if op == "forward":
        rm, rm_rec = _field((5,), 0.0)
        rv, _ = _field((5,), 1.0)
        nbnorm.batch_norm_forward(x, axis=0, running_mean=rm, running_var=rv)
        np.testing.assert_allclose(rm, 0.1 * plain.mean(axis=0), rtol=1e-6)
        assert (rm_rec["tag"] == 7).all()


@pytest.mark.parametrize("op", ["batch_small", "batch_fused", "layer", "group", "instance"])
def test_eps_zero_on_a_constant_slice_is_nan_without_warnings(op):
    """Every CPU path gives the same answer for 0/0, silently (the fused
    kernels never warned; NumPy-level paths now agree)."""
    x = np.full((2, 70, 3), 1.5)
    calls = {"batch_small": lambda: nbnorm.batch_norm_forward(x[:, :2], axis=(0, 2), eps=0.0),
             "batch_fused": lambda: nbnorm.batch_norm_forward(x, axis=(0, 2), eps=0.0),
             "layer": lambda: nbnorm.layer_norm(x, eps=0.0),
             "group": lambda: nbnorm.group_norm(x, 7, eps=0.0),
             "instance": lambda: nbnorm.instance_norm(x, eps=0.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _, invstd = calls[op]()
    assert np.isnan(y).all() and np.isinf(invstd).all()
