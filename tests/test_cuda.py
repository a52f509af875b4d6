"""CUDA backend through the public API, against ``nbnorm.reference``.

Runs on a GPU, or on the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set by
``conftest.py`` when no GPU exists); shapes stay tiny for the simulator but
still cover the split reduction, warp/block merges, both thread mappings,
every dtype and odd layouts.
"""

import warnings

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
from nbnorm._cuda.backend import to_device_like  # noqa: E402

RTOL = {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-11}
ATOL = {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-11}


# ------------------------------------------------------------------ helpers
def make(shape, dtype, layout_fn=None, seed=0, loc=3.0):
    """``(host view, device view)`` of random data with the same layout."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(shape) * 2 + loc).astype(dtype)
    h = base if layout_fn is None else layout_fn(base)
    return h, to_device_like(h)


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
    """Guarded on the device, without reading anything back (so no warning:
    the CPU path's RuntimeWarning would need a device→host synchronization)."""
    x = np.ones((6, 3), np.float32)
    x[2, 1] = np.nan
    run_m = cuda.to_device(np.full(3, 0.5, np.float32))
    run_v = cuda.to_device(np.full(3, 2.0, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
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
    d = to_device_like(h[::-1, ::2])
    out = B.astype(d, np.float64)
    np.testing.assert_array_equal(host(out), h[::-1, ::2].astype(np.float64))


def test_running_stats_strided_float64():
    hx, dx = make((10, 4), np.float32)
    base = np.zeros(8)
    run_m = to_device_like(base[::2])
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


# ------------------------------------------------- exactness and non-finite data
CONSTANT = [(np.float32, 3e7), (np.float64, 1e15)]


def _constant(layout, dtype, value):
    """Data of ``layout`` whose every statistic is a constant channel near ``value``."""
    shape, fn, axis = LAYOUTS[layout]
    hx, _ = make(shape, dtype, fn)
    kshape = R.moments(hx, axis=axis, keepdims=True)[0].shape
    sshape = np.shape(R.moments(hx, axis=axis)[0])
    levels = (value * (1 + np.arange(int(np.prod(sshape))) / 8)).reshape(sshape).astype(dtype)
    hx[...] = levels.reshape(kshape)
    return hx, to_device_like(hx), axis, sshape, levels


@pytest.mark.parametrize("dtype,value", CONSTANT)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "axis0", "negative"])
def test_constant_channels_give_exactly_bias(layout, dtype, value):
    hx, dx, axis, sshape, levels = _constant(layout, dtype, value)
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2, sshape).astype(dtype)
    b = rng.standard_normal(sshape).astype(dtype)
    want = np.broadcast_to(b.reshape(R.moments(hx, axis=axis, keepdims=True)[0].shape),
                           hx.shape)
    y, mean, _ = nbnorm.batch_norm_forward(dx, cuda.to_device(w), cuda.to_device(b), axis=axis)
    np.testing.assert_array_equal(host(mean), levels)
    np.testing.assert_array_equal(host(y), want)
    y0, _, _ = nbnorm.batch_norm_forward(dx, axis=axis)
    np.testing.assert_array_equal(host(y0), np.zeros(hx.shape, dtype))
    sd = np.float64 if dtype == np.float64 else np.float32
    dm = cuda.to_device(levels.astype(sd))
    dv = cuda.to_device(np.zeros(sshape, sd))
    yi = nbnorm.batch_norm_inference(dx, dm, dv, cuda.to_device(w), cuda.to_device(b),
                                     axis=axis)
    np.testing.assert_array_equal(host(yi), want)
    yi0 = nbnorm.batch_norm_inference(dx, dm, dv, axis=axis)
    np.testing.assert_array_equal(host(yi0), np.zeros(hx.shape, dtype))


def test_inference_full_precision_mean():
    """A float64 mean is subtracted in full precision from float32 data."""
    x = np.full((40, 3), 3e7, np.float32)
    mean = np.full(3, 3e7 + 0.25)
    y = nbnorm.batch_norm_inference(cuda.to_device(x), cuda.to_device(mean),
                                    cuda.to_device(np.ones(3)), axis=0, eps=0.0)
    np.testing.assert_array_equal(host(y), np.full((40, 3), -0.25, np.float32))


def _with_infs(layout, dtype, where):
    shape, fn, axis = LAYOUTS[layout]
    hx, _ = make(shape, dtype, fn)
    idx = [np.unravel_index(i % hx.size, hx.shape) for i in where]
    hx[idx[0]] = np.inf
    hx[idx[1]] = -np.inf
    return hx, to_device_like(hx), axis, idx


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "negative"])
def test_inference_keeps_infinities(layout, dtype):
    hx, dx, axis, idx = _with_infs(layout, dtype, (7, 31))
    rm, rv = R.moments(np.where(np.isfinite(hx), hx, 0), axis=axis)
    sshape = np.shape(rm)
    w = np.linspace(0.5, 2, int(np.prod(sshape))).reshape(sshape).astype(dtype)
    b = np.linspace(-1, 1, int(np.prod(sshape))).reshape(sshape).astype(dtype)
    sd = np.float64 if dtype == np.float64 else np.float32
    mean, var = np.asarray(rm, sd), np.asarray(rv, sd)
    y = host(nbnorm.batch_norm_inference(dx, cuda.to_device(mean), cuda.to_device(var),
                                         cuda.to_device(w), cuda.to_device(b), axis=axis))
    assert y[idx[0]] == np.inf and y[idx[1]] == -np.inf
    assert np.isfinite(y).sum() == y.size - 2
    with np.errstate(all="ignore"):
        ry = R.batch_norm_inference(hx, mean, var, w, b, axis=axis)
    fin = np.isfinite(hx)
    close(y[fin], ry[fin], dtype, 4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "rows", "axis0"])
def test_frozen_backward_infinite_dy_and_x(layout):
    """Frozen ``dx = dy·weight·invstd``: ±inf in ``dy`` stays ±inf, ±inf in ``x``
    is never read (no ``inf·0``)."""
    dtype = np.float32
    hdy, ddy, axis, idx = _with_infs(layout, dtype, (5, 22))
    hx, dx, _, xidx = _with_infs(layout, dtype, (3, 17))
    rm, rv = R.moments(np.where(np.isfinite(hx), hx, 0), axis=axis)
    sshape = np.shape(rm)
    mean = np.asarray(rm, np.float32)
    invstd = np.asarray(1 / np.sqrt(rv + 1e-5), np.float32)
    w = np.linspace(0.5, 2, int(np.prod(sshape))).reshape(sshape).astype(dtype)
    gx, _, _ = nbnorm.batch_norm_backward(ddy, dx, cuda.to_device(mean), cuda.to_device(invstd),
                                          cuda.to_device(w), axis=axis, training=False)
    gx = host(gx)
    assert gx[idx[0]] == np.inf and gx[idx[1]] == -np.inf
    assert np.isfinite(gx).sum() == gx.size - 2
    kshape = R.moments(hx, axis=axis, keepdims=True)[0].shape
    with np.errstate(all="ignore"):
        want = hdy.astype(np.float64) * (w * invstd).astype(np.float64).reshape(kshape)
    close(gx, want, dtype, 4)
    for i in xidx:
        assert np.isfinite(gx[i])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((5, 300), 1), ((300, 5), 0), ((4, 5, 60), (0, 2))])
def test_moments_nonfinite_like_numpy(shape, axis, dtype):
    """+inf alone gives mean +inf (−inf: −inf), both or a NaN give NaN; var is NaN.

    The infinities sit first, in the middle and last of a statistic's data,
    so they meet finite values in every merge (per thread, warp, block, chunk).
    """
    hx, _ = make(shape, dtype)
    ax = (axis,) if isinstance(axis, int) else axis
    view = np.moveaxis(hx, ax, tuple(range(len(ax))))
    moved = view.reshape(-1, 5).copy()          # (n, stat)
    n = moved.shape[0]
    moved[0, 0] = np.inf                       # stat 0: +inf first
    moved[n // 2, 1] = np.inf                  # stat 1: +inf in the middle, twice
    moved[n // 2 + 1, 1] = np.inf
    moved[n - 1, 2] = -np.inf                  # stat 2: -inf last
    moved[1, 3] = np.inf                       # stat 3: +inf and -inf
    moved[n - 2, 3] = -np.inf
    moved[n // 3, 4] = np.nan                  # stat 4: NaN
    view[...] = moved.reshape(view.shape)
    assert np.isinf(hx).sum() == 6
    mean, var = nbnorm.moments(to_device_like(hx), axis=axis)
    mean, var = host(mean).reshape(-1), host(var).reshape(-1)
    np.testing.assert_array_equal(mean, [np.inf, np.inf, -np.inf, np.nan, np.nan])
    assert np.isnan(var).all()
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(mean, np.mean(hx, axis=axis).reshape(-1))


def test_main_job_gpu_rows_check_every_case():
    """The GPU rows of ``python -m nbnorm`` (run here on the simulator)."""
    from nbnorm._bench import run_cuda_cases
    rows, copy_bw = run_cuda_cases((2, 3, 2, 3), "float32", repeat=1)
    assert copy_bw > 0 and len(rows) == 12
    assert all(r.ok for r in rows), [(r.op, r.layout, r.error) for r in rows if not r.ok]
