"""CUDA backend through the public API, against ``nbnorm.reference``.

Runs on a GPU, or on the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set by
``conftest.py`` when no GPU exists); shapes stay tiny for the simulator but
still cover the split reduction, warp/block merges, both thread mappings,
every dtype and odd layouts.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

cuda = pytest.importorskip("numba.cuda")
from numba import config  # noqa: E402

SIM = bool(config.ENABLE_CUDASIM)
if not SIM:
    try:
        if not cuda.is_available():
            pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set", allow_module_level=True)
    except Exception as e:  # pragma: no cover
        pytest.skip(f"CUDA unavailable: {e}", allow_module_level=True)

import nbnorm  # noqa: E402
from nbnorm import reference as R  # noqa: E402

RTOL = {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-11}
ATOL = {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-11}


# ------------------------------------------------------------------ helpers
def _view(d, host, fn):
    """Apply the NumPy view ``fn`` to device array ``d`` (same layout as
    ``host``) without copying."""
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(fn(d._ary))
    v = fn(host)
    shift = v.__array_interface__["data"][0] - host.__array_interface__["data"][0]
    cai = d.__cuda_array_interface__
    desc = {"shape": v.shape, "strides": v.strides, "typestr": v.dtype.str, "version": 3,
            "data": (cai["data"][0] + shift, False), "stream": None}
    return cuda.from_cuda_array_interface(desc, owner=d, sync=False)


def make(shape, dtype, layout_fn=None, seed=0, loc=3.0):
    """``(host view, device view)`` of random data with the same layout."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(shape) * 2 + loc).astype(dtype)
    d = cuda.to_device(base)
    if layout_fn is None:
        return base, d
    return layout_fn(base), _view(d, base, layout_fn)


def host(a):
    return np.asarray(a.copy_to_host())


# (base shape, view fn, axis): logical views of a C-contiguous base array
LAYOUTS = {
    "nchw": ((8, 2, 4, 5), None, (0, 2, 3)),
    "channels_last": ((8, 4, 5, 3), lambda a: a.transpose(0, 3, 1, 2), (0, 2, 3)),
    "rows": ((6, 40), None, 1),
    "axis0": ((40, 6), None, 0),
    "odd_subset": ((3, 4, 5, 6), None, (1, 3)),
    "negative": ((9, 2, 12), lambda a: a[::-1, :, ::-2], (0, 2)),
    "all": ((5, 7), None, None),
}
DTYPES = [np.float16, np.float32, np.float64]


def close(got, want, dtype, scale=1.0):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL[dtype],
                               atol=ATOL[dtype] * scale)


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_moments(layout, dtype):
    shape, fn, axis = LAYOUTS[layout]
    hx, dx = make(shape, dtype, fn)
    mean, var = nbnorm.moments(dx, axis=axis, ddof=1)
    rm, rv = R.moments(hx, axis=axis, ddof=1)
    sd = np.float64 if dtype == np.float64 else np.float32
    assert host(mean).dtype == sd and host(mean).shape == rm.shape
    close(host(mean), rm, dtype if dtype != np.float16 else np.float32, 4)
    close(host(var), rv, dtype if dtype != np.float16 else np.float32, 4)


def test_moments_keepdims_and_large_offset():
    hx, dx = make((16, 3, 6), np.float32, loc=1e4)
    mean, var = nbnorm.moments(dx, axis=(0, 2), keepdims=True)
    rm, rv = R.moments(hx, axis=(0, 2), keepdims=True)
    assert mean.shape == (1, 3, 1) and var.shape == (1, 3, 1)
    np.testing.assert_allclose(host(mean), rm, rtol=1e-6)
    np.testing.assert_allclose(host(var), rv, rtol=1e-3)


def test_moments_ddof_too_large():
    _, dx = make((3, 4), np.float64)
    with pytest.warns(RuntimeWarning):
        _, var = nbnorm.moments(dx, axis=0, ddof=3)
    assert np.isnan(host(var)).all() or np.isinf(host(var)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_forward_with_running_stats(layout, dtype):
    shape, fn, axis = LAYOUTS[layout]
    hx, dx = make(shape, dtype, fn)
    rm, rv = R.moments(hx, axis=axis)
    sshape = np.shape(rm)
    rng = np.random.default_rng(1)
    w = rng.standard_normal(sshape).astype(dtype)
    b = rng.standard_normal(sshape).astype(dtype)
    run_m = np.zeros(sshape, np.float32)
    run_v = np.ones(sshape, np.float32)
    d_rm, d_rv = cuda.to_device(run_m), cuda.to_device(run_v)
    y, mean, invstd = nbnorm.batch_norm_forward(dx, cuda.to_device(w), cuda.to_device(b),
                                                axis=axis, running_mean=d_rm, running_var=d_rv)
    ry, rmean, rinv = R.batch_norm_forward(hx, w, b, axis=axis, running_mean=run_m,
                                           running_var=run_v)
    assert host(y).dtype == dtype and host(y).shape == hx.shape
    close(host(y), ry, dtype, 4)
    acc = np.float64 if dtype == np.float64 else np.float32
    close(host(mean), rmean, acc, 4)
    close(host(invstd), rinv, acc, 4)
    close(host(d_rm), run_m, np.float32, 4)
    close(host(d_rv), run_v, np.float32, 4)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "rows"])
def test_forward_in_place_without_affine(layout):
    shape, fn, axis = LAYOUTS[layout]
    hx, dx = make(shape, np.float32, fn)
    ry, _, _ = R.batch_norm_forward(hx, axis=axis, eps=1e-3)
    y, _, _ = nbnorm.batch_norm_forward(dx, axis=axis, eps=1e-3, out=dx)
    close(host(dx), ry, np.float32, 4)
    assert y is dx or host(y).shape == hx.shape


def test_forward_nonfinite_keeps_running_stats():
    x = np.ones((6, 3), np.float32)
    x[2, 1] = np.nan
    run_m = cuda.to_device(np.full(3, 0.5, np.float32))
    run_v = cuda.to_device(np.full(3, 2.0, np.float32))
    with pytest.warns(RuntimeWarning):
        nbnorm.batch_norm_forward(cuda.to_device(x), axis=0, running_mean=run_m,
                                  running_var=run_v, momentum=0.5)
    np.testing.assert_allclose(host(run_m), [0.75, 0.5, 0.75])
    np.testing.assert_allclose(host(run_v), [1.0, 2.0, 1.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "odd_subset", "negative"])
def test_inference(layout, dtype):
    shape, fn, axis = LAYOUTS[layout]
    hx, dx = make(shape, dtype, fn)
    rm, rv = R.moments(hx, axis=axis)
    sshape = np.shape(rm)
    mean = rm.astype(np.float32)
    var = (rv + 0.5).astype(np.float32)
    w = np.linspace(0.5, 2, int(np.prod(sshape))).reshape(sshape).astype(dtype)
    y = nbnorm.batch_norm_inference(dx, cuda.to_device(mean), cuda.to_device(var),
                                    cuda.to_device(w), None, axis=axis)
    ry = R.batch_norm_inference(hx, mean, var, w, None, axis=axis)
    close(host(y), ry, dtype, 4)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_backward_float32(layout, training):
    _backward(layout, np.float32, training)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_backward_dtypes(layout, dtype):
    _backward(layout, dtype, True)


def _backward(layout, dtype, training):
    shape, fn, axis = LAYOUTS[layout]
    hx, dx = make(shape, dtype, fn)
    hdy, ddy = make(shape, dtype, fn, seed=5, loc=0.0)
    rm, rv = R.moments(hx, axis=axis)
    sd = np.float64 if dtype == np.float64 else np.float32
    mean = np.asarray(rm, sd)
    invstd = np.asarray(1 / np.sqrt(rv + 1e-5), sd)
    w = np.asarray(np.linspace(0.5, 2, mean.size).reshape(mean.shape), dtype)
    gx, gw, gb = nbnorm.batch_norm_backward(ddy, dx, cuda.to_device(mean),
                                            cuda.to_device(invstd), cuda.to_device(w),
                                            axis=axis, training=training)
    rx, rw, rb = R.batch_norm_backward(hdy, hx, mean, invstd, w, axis=axis, training=training)
    assert host(gx).dtype == dtype and host(gx).shape == hx.shape
    n = hx.size // max(mean.size, 1)
    close(host(gx), rx, dtype, 4)
    close(host(gw), rw, sd if dtype != np.float16 else np.float32, 4 * n)
    close(host(gb), rb, sd if dtype != np.float16 else np.float32, 4 * n)


def test_backward_into_dy():
    shape, fn, axis = LAYOUTS["nchw"]
    hx, dx = make(shape, np.float64, fn)
    hdy, ddy = make(shape, np.float64, fn, seed=2)
    rm, rv = R.moments(hx, axis=axis)
    inv = 1 / np.sqrt(rv + 1e-5)
    rx, _, _ = R.batch_norm_backward(hdy, hx, rm, inv, axis=axis)
    nbnorm.batch_norm_backward(ddy, dx, cuda.to_device(rm), cuda.to_device(inv), axis=axis,
                               out=ddy)
    close(host(ddy), rx, np.float64, 4)


def test_backend_astype_strided_int():
    from nbnorm._cuda import backend as B
    h = np.arange(24, dtype=np.int32).reshape(4, 6)
    d = _view(cuda.to_device(h), h, lambda a: a[::-1, ::2])
    out = B.astype(d, np.float64)
    np.testing.assert_array_equal(host(out), h[::-1, ::2].astype(np.float64))


def test_running_stats_strided_float64():
    hx, dx = make((10, 4), np.float32)
    base = np.zeros(8)
    run_m = _view(cuda.to_device(base), base, lambda a: a[::2])
    run_v = cuda.to_device(np.ones(4))
    nbnorm.batch_norm_forward(dx, axis=0, running_mean=run_m, running_var=run_v)
    rm, rv = np.zeros(4), np.ones(4)
    R.batch_norm_forward(hx, axis=0, running_mean=rm, running_var=rv)
    np.testing.assert_allclose(host(run_m), rm, rtol=1e-6)
    np.testing.assert_allclose(host(run_v), rv, rtol=1e-6)


def test_mixing_host_and_device_raises():
    hx, dx = make((4, 3), np.float32)
    with pytest.raises(TypeError):
        nbnorm.batch_norm_forward(dx, np.ones(3, np.float32), axis=0)
    with pytest.raises(TypeError):
        nbnorm.batch_norm_inference(hx, cuda.to_device(np.zeros(3, np.float32)),
                                    np.ones(3, np.float32), axis=0)


def test_numba_in_numba_out():
    _, dx = make((4, 3), np.float32)
    y, mean, invstd = nbnorm.batch_norm_forward(dx, axis=0)
    for a in (y, mean, invstd):
        assert type(a) is type(dx)
        assert not isinstance(a, np.ndarray)


@pytest.mark.skipif(SIM, reason="CuPy needs a GPU")
def test_cupy_in_cupy_out():
    cp = pytest.importorskip("cupy")
    x = cp.asarray(np.random.default_rng(0).standard_normal((16, 3, 5)), dtype=cp.float32)
    y, mean, invstd = nbnorm.batch_norm_forward(x, axis=(0, 2))
    assert isinstance(y, cp.ndarray) and isinstance(mean, cp.ndarray)
    ry, rm, _ = R.batch_norm_forward(cp.asnumpy(x), axis=(0, 2))
    np.testing.assert_allclose(cp.asnumpy(y), ry, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(SIM, reason="PyTorch CUDA tensors need a GPU")
def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = torch.randn(16, 3, 5, device="cuda").to(memory_format=torch.contiguous_format)
    y, mean, invstd = nbnorm.batch_norm_forward(x, axis=(0, 2))
    assert isinstance(y, torch.Tensor) and y.is_cuda
    ry, _, _ = R.batch_norm_forward(x.cpu().numpy(), axis=(0, 2))
    np.testing.assert_allclose(y.cpu().numpy(), ry, rtol=1e-4, atol=1e-4)
