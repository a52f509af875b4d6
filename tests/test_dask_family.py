"""Layer, group, instance and RMS norm on Dask arrays: lazy in, lazy out,
each chunk on the backend of its own type, results those of the call on the
computed array."""
from __future__ import annotations

import types

import numpy as np
import pytest

import nbnorm

from helpers import normal

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

SHAPE = (6, 4, 5, 7)
CHUNKS = {"batch": (2, 4, 5, 7), "everywhere": (4, 3, 2, 4)}
W = {"layer": (5, 7), "rms": (7,), "group": (4,), "instance": (4,)}


def call(name, x, w, b):
    """The member's forward and the arguments its backward needs."""
    if name == "layer":
        y, mean, inv = nbnorm.layer_norm(x, w, b, axis=(2, 3))
        return (y, mean, inv), lambda dy, x: nbnorm.layer_norm_backward(dy, x, mean, inv, w,
                                                                        axis=(2, 3))
    if name == "rms":
        y, rstd = nbnorm.rms_norm(x, w, axis=-1)
        return (y, rstd), lambda dy, x: nbnorm.rms_norm_backward(dy, x, rstd, w, axis=-1)
    if name == "group":
        y, mean, inv = nbnorm.group_norm(x, 2, w, b)
        return (y, mean, inv), lambda dy, x: nbnorm.group_norm_backward(dy, x, mean, inv, 2, w)
    y, mean, inv = nbnorm.instance_norm(x, w, b)
    return (y, mean, inv), lambda dy, x: nbnorm.instance_norm_backward(dy, x, mean, inv, w)


def counting():
    calls = []
    return calls, dask.config.set(scheduler=lambda dsk, keys, **kw: calls.append(1))


@pytest.mark.parametrize("chunks", sorted(CHUNKS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(W))
def test_forward_and_backward_match_numpy(name, dtype, chunks):
    x = normal(SHAPE, dtype, seed=1, loc=3.0, scale=2.0)
    dy = normal(SHAPE, dtype, seed=2)
    w = normal(W[name], dtype, seed=3, loc=1.0)
    b = normal(W[name], dtype, seed=4)
    xd, dyd = (da.from_array(a, chunks=CHUNKS[chunks]) for a in (x, dy))
    want, back = call(name, x, w, b if name != "rms" else None)
    calls, scheduler = counting()
    with scheduler:
        got, back_d = call(name, xd, w, b if name != "rms" else None)
        grads = back_d(dyd, xd)
    assert not calls, "a call computed something"
    assert all(isinstance(g, da.Array) for g in (*got, *grads))
    got = dask.compute(*got, scheduler="sync")
    for g, v in zip(got, want):
        assert g.dtype == v.dtype and g.shape == v.shape
        np.testing.assert_array_equal(g, v)        # each statistic whole in one chunk: bitwise
    want_g = back(dy, x)
    grads = dask.compute(*grads, scheduler="sync")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for g, v in zip(grads, want_g):
        assert g.dtype == v.dtype and g.shape == v.shape
        np.testing.assert_allclose(g, v, rtol=tol, atol=tol * (np.abs(v).max() + 1))


def test_channels_last_group_norm_and_running_statistics():
    x = normal((6, 5, 7, 4), np.float32, seed=5, loc=2.0)
    xd = da.from_array(x, chunks=(2, 3, 7, 2))
    want = nbnorm.group_norm(x, 2, channel_axis=-1)
    got = dask.compute(*nbnorm.group_norm(xd, 2, channel_axis=-1), scheduler="sync")
    for g, v in zip(got, want):
        np.testing.assert_array_equal(g, v)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    rm_d, rv_d = rm.copy(), rv.copy()
    nbnorm.instance_norm(x, channel_axis=-1, running_mean=rm, running_var=rv)
    y = nbnorm.instance_norm(xd, channel_axis=-1, running_mean=rm_d, running_var=rv_d)[0]
    np.testing.assert_allclose(rm_d, rm, rtol=1e-6)
    np.testing.assert_allclose(rv_d, rv, rtol=1e-6)
    assert isinstance(y, da.Array)


def test_out_is_refused_and_a_backend_without_the_family_says_so():
    xd = da.ones((4, 3), chunks=2)
    with pytest.raises(TypeError, match="out: not supported with Dask input"):
        nbnorm.layer_norm(xd, out=np.empty((4, 3)))
    from nbnorm import _family
    bare = types.SimpleNamespace(name="bare")
    with pytest.raises(NotImplementedError, match="group_norm: not implemented yet for bare"):
        _family._op(bare, "group_norm", "norm_forward")


@pytest.mark.cuda
def test_device_chunks_run_on_the_cuda_backend():
    pytest.importorskip("numba.cuda")
    from nbnorm._cuda.backend import to_device_like
    x = normal((4, 3, 2, 5), np.float32, seed=6, loc=3.0)
    dy = normal((4, 3, 2, 5), np.float32, seed=7)
    w = normal((3, 2, 5), np.float32, seed=8, loc=1.0)

    def dev(a):
        return da.from_array(a, chunks=(2, 3, 2, 5)).map_blocks(
            to_device_like, meta=np.empty((0,) * 4, np.float32))

    def host(a):
        return np.asarray(a.copy_to_host() if hasattr(a, "copy_to_host") else a)

    want = nbnorm.layer_norm(x, w, axis=(1, 2, 3))
    got = dask.compute(*nbnorm.layer_norm(dev(x), w, axis=(1, 2, 3)), scheduler="sync")
    for g, v in zip(got, want):
        np.testing.assert_allclose(host(g), v, rtol=1e-5, atol=1e-6)
    want_g = nbnorm.layer_norm_backward(dy, x, want[1], want[2], w, axis=(1, 2, 3))
    got_g = dask.compute(*nbnorm.layer_norm_backward(dev(dy), dev(x), want[1], want[2], w,
                                                     axis=(1, 2, 3)), scheduler="sync")
    for g, v in zip(got_g, want_g):
        np.testing.assert_allclose(host(g), v, rtol=1e-5, atol=1e-5)
