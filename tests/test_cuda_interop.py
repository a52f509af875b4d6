"""What only the CUDA backend has: its array types in and out (Numba device
arrays, CuPy, torch CUDA tensors), host/device mixing errors, its helpers,
and the GPU rows of the main job.  Every numerical check of the CUDA kernels
is in the shared, backend-parametrized tests (``backend`` fixture in
``conftest.py``: test_forward, test_backward, test_inference, test_moments,
test_exact, test_family).

Runs on a GPU, or on the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set by
``conftest.py`` when no GPU exists).
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
from nbnorm._cuda.backend import to_device_like  # noqa: E402


def host(a):
    return np.asarray(a.copy_to_host())


def make(shape, dtype, seed=0):
    """``(host array, device copy)`` of random data."""
    h = (np.random.default_rng(seed).standard_normal(shape) * 2 + 3).astype(dtype)
    return h, to_device_like(h)


def test_backend_astype_strided_int():
    from nbnorm._cuda import backend as B
    h = np.arange(24, dtype=np.int32).reshape(4, 6)
    d = to_device_like(h[::-1, ::2])
    out = B.astype(d, np.float64)
    np.testing.assert_array_equal(host(out), h[::-1, ::2].astype(np.float64))


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


def test_main_job_gpu_rows_check_every_case():
    """The GPU rows of ``python -m nbnorm`` (run here on the simulator)."""
    from nbnorm._bench import run_cuda_cases
    rows, copy_bw = run_cuda_cases((2, 3, 2, 3), "float32", repeat=1)
    assert copy_bw > 0 and len(rows) == 12
    assert all(r.ok for r in rows), [(r.op, r.layout, r.error) for r in rows if not r.ok]


def test_no_host_transfer_in_the_call_path_once_a_shape_was_seen(monkeypatch):
    """After a first call per shape (which copies the plan's arrays and the
    unit parameter vectors to the device once, see
    ``launch.device_constant``), no call copies anything between host and
    device or synchronizes: training forward with running statistics,
    inference, backward, moments, and the family's forward and backward."""
    hx, x = make((4, 3, 5), np.float32)
    _, dy = make((4, 3, 5), np.float32, seed=1)
    w, b, rm, rv = (to_device_like(np.full(3, v, np.float32)) for v in (1.5, 0.5, 0.0, 1.0))
    lw = to_device_like(np.ones((3, 5), np.float32))

    def calls():
        y, mean, invstd = nbnorm.batch_norm_forward(x, w, b, axis=(0, 2), running_mean=rm,
                                                    running_var=rv)
        nbnorm.batch_norm_inference(x, mean, invstd, w, b, axis=(0, 2))
        nbnorm.batch_norm_backward(dy, x, mean, invstd, w, axis=(0, 2))
        nbnorm.moments(x, axis=(0, 2))
        y, mean, invstd = nbnorm.layer_norm(x, lw, None, axis=(1, 2))
        nbnorm.layer_norm_backward(dy, x, mean, invstd, lw, axis=(1, 2))
        y, mean, invstd = nbnorm.group_norm(x, 3)
        nbnorm.group_norm_backward(dy, x, mean, invstd, 3)
        return y

    calls()

    def refuse(*args, **kwargs):
        raise AssertionError("a host/device copy or synchronization in the call path")

    monkeypatch.setattr(cuda, "to_device", refuse)
    monkeypatch.setattr(cuda, "synchronize", refuse)
    monkeypatch.setattr(type(x), "copy_to_host", refuse)
    y = calls()
    monkeypatch.undo()
    ry, _, _ = R.group_norm(hx, 3)
    np.testing.assert_allclose(host(y), ry, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_chunks", [1, 3, 32, 100])
def test_finalize_merges_many_chunks_across_lanes(n_chunks):
    """``finalize_welford`` with up to 32 lanes per statistic (several chunks
    per lane when there are more than 32) gives the statistics of the
    sequential Chan merge of the partials, to float64 rounding."""
    from types import SimpleNamespace

    from nbnorm import _welford
    from nbnorm._cuda import launch

    rng = np.random.default_rng(n_chunks)
    n_stats = 5
    count = rng.integers(1, 50, (n_chunks, n_stats)).astype(np.float64)
    count[rng.random(count.shape) < 0.1] = 0.0              # empty chunks
    count[0] = np.maximum(count[0], 1)
    mean = np.where(count > 0, rng.normal(3.0, 2.0, count.shape), 0.0)
    m2 = np.where(count > 1, rng.random(count.shape) * count, 0.0)
    pivots = rng.normal(1e3, 1.0, n_stats)
    one = np.zeros((1, 1), np.int64)     # a plan of n_stats statistics of one element of x
    plan = SimpleNamespace(n_chunks=n_chunks, n_stats=n_stats, n=1,
                           args=(np.array([n_stats]), one + 1, one, np.ones(1, np.int64), one,
                                 np.zeros(1, np.int64)))
    partials = [cuda.to_device(a.ravel()) for a in (count, mean, m2)] + [cuda.to_device(pivots)]
    got_mean, got_var, *_ = launch.finalize(cuda.to_device(np.zeros(1)), plan, partials, 1.0, 0,
                                            acc=np.float64)
    for s in range(n_stats):
        n, mu, v = 0.0, 0.0, 0.0
        for c in range(n_chunks):
            n, mu, v = _welford.chan_merge(n, mu, v, count[c, s], mean[c, s], m2[c, s])
        np.testing.assert_allclose(host(got_mean)[s], pivots[s] + mu, rtol=1e-15)
        np.testing.assert_allclose(host(got_var)[s], v, rtol=1e-13)


@pytest.mark.skipif(SIM, reason="PyTorch CUDA streams need a GPU")
def test_torch_current_stream_is_the_launch_stream():
    """Inside ``with torch.cuda.stream(s)`` the input is produced on ``s`` (a
    long chain of kernels) and nbnorm must run after it, on ``s``: the
    result matches the reference computed from the finished input."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        a = torch.randn(2048, 2048, device="cuda")
        for _ in range(20):
            a = a @ a / 2048 ** 0.5                    # keeps s busy
        x = a.reshape(64, 64, 32, 32).contiguous()
        y, mean, invstd = nbnorm.batch_norm_forward(x, axis=(0, 2, 3))
    s.synchronize()
    ry, rm, _ = R.batch_norm_forward(x.cpu().numpy(), axis=(0, 2, 3))
    np.testing.assert_allclose(mean.cpu().numpy(), rm, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y.cpu().numpy(), ry, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(SIM, reason="CuPy needs a GPU")
def test_cupy_results_view_the_output_memory_without_synchronizing(monkeypatch):
    """CuPy results are built from the pointer: ``cupy.asarray`` (which
    synchronizes with the stream the interface names) is never called."""
    cp = pytest.importorskip("cupy")
    x = cp.asarray(np.random.default_rng(1).standard_normal((16, 3, 5)), dtype=cp.float32)

    def refuse(*args, **kwargs):
        raise AssertionError("cupy.asarray in the call path")

    monkeypatch.setattr(cp, "asarray", refuse)
    y, mean, invstd = nbnorm.batch_norm_forward(x[:, :, ::-1], axis=(0, 2))
    monkeypatch.undo()
    assert isinstance(y, cp.ndarray) and isinstance(mean, cp.ndarray)
    ry, rm, _ = R.batch_norm_forward(cp.asnumpy(x)[:, :, ::-1], axis=(0, 2))
    np.testing.assert_allclose(cp.asnumpy(y), ry, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(mean), rm, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,axis,blocks", [((64, 128, 7, 7), (0, 2, 3), 264),
                                               ((64, 128, 56, 56), (0, 2, 3), 264),
                                               ((16, 6, 1024, 1024), (0, 2, 3), 264)])
def test_gpu_launch_constants_fill_an_h100(monkeypatch, shape, axis, blocks):
    """With the GPU launch constants (not the simulator's), the statistics
    pass of these NCHW shapes launches at least two blocks per SM of an H100
    (132 SMs): small spatial sizes are split into chunks too."""
    from nbnorm._cuda import launch
    for name, value in launch.GPU_CONSTANTS.items():
        monkeypatch.setattr(launch, name, value)
    monkeypatch.setattr(launch, "TPB", 256)
    strides = [list(np.cumprod((1,) + shape[::-1])[:-1][::-1])]
    plan = launch.DevPlan(shape, axis, strides, 0)
    assert plan.grid >= blocks, (plan.grid, plan.n_chunks, plan.width)
