"""Inputs, layouts and implementations shared by the nbnorm benchmark suites.

Layouts (``axis`` is what is reduced over; statistics keep the other dims):

========  =====================================  ==============  ==================
layout    array                                  axis            used as
========  =====================================  ==============  ==================
``nchw``  4-D (N, C, H, W), C-contiguous         (0, 2, 3)       BatchNorm2d
``nhwc``  the same logical (N, C, H, W) array    (0, 2, 3)       channels-last
          stored channels-last (a transposed
          view of an (N, H, W, C) buffer)
``rows``  2-D (N, D)                             (0,)            BatchNorm1d
``ncl``   3-D (N, C, L)                          (0, 2)          BatchNorm1d (seq.)
``odd``   4-D (A, B, C, D)                       (1, 3)          interleaved axes
========  =====================================  ==============  ==================

Sizes: ``small`` = 100 352 float32 elements (392 KiB per array: in cache);
``large`` = 25 690 112 float32 elements (102.8 MB per array: DRAM bound).
Every dtype gets the same number of *bytes* (one reduced dim is scaled by
4 / itemsize), so GB/s are comparable across float16/float32/float64.
The large size runs for every layout in float32 and for every dtype in
``nchw`` (:func:`large_ok`); every op × layout × dtype runs at the small size
(the peers: float32 only at the small size).

Implementations (``impl`` × ``backend``): ``nbnorm`` (cpu, cuda); the peers
``numpy`` (cpu), ``cupy`` (cuda) — the same array-API code, written as a
user would — and ``torch`` (cpu, cuda; ``torch.ops.aten.native_batch_norm``
and friends, the kernels behind ``torch.nn.BatchNorm*``).  Combinations
that cannot run here (no GPU, peer not installed, numpy on cuda, cupy on
cpu, outside the large-size subset) are listed in each class's asv
``skip_params`` (:func:`static_skips`; no process work at all) or raise
``NotImplementedError`` in ``setup`` (e.g. a GPU the driver cannot use):
asv records them as skipped, not failed.  Inputs are filled with a cheap deterministic pattern (a fixed
random block of 4096 values, mean ≈ 1.5, std ≈ 0.5, tiled), so building a
100 MB input costs a memory write, not a random-number generator.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import itertools
import os
import sys
import time

import numpy as np

import nbnorm

# torch, cupy and numba.cuda are imported on first use, so a process that runs
# one nbnorm benchmark (asv's default "spawn" launch method) does not pay for
# them.  Under asv's "forkserver" (asv.conf.json) the suite is imported once by
# the server and every benchmark process is forked from it: preload there.
torch = None
cupy = None


def have(module):
    """Whether ``module`` is installed (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load(module):
    """Import ``torch`` or ``cupy`` into this module's namespace; returns it."""
    mod = importlib.import_module(module)
    globals()[module] = mod
    return mod


if sys.argv[1:2] == ["run_server"]:      # asv's forkserver: import once, fork many
    import numba  # noqa: F401
    for _m in ("torch", "cupy"):
        if have(_m):
            try:
                load(_m)
            except Exception:  # a broken install: the benchmarks needing it fail later
                pass

EPS = 1e-5
OPS = ("moments", "batch_norm_forward", "batch_norm_inference", "batch_norm_backward")
LAYOUTS = ("nchw", "nhwc", "rows", "ncl", "odd")
DTYPES = ("float32", "float64", "float16")
SIZES = ("small", "large")
BACKENDS = ("cpu", "cuda")
IMPLS = ("nbnorm", "numpy", "torch", "cupy")

AXES = {"nchw": (0, 2, 3), "nhwc": (0, 2, 3), "rows": (0,), "ncl": (0, 2), "odd": (1, 3)}
# float32 shape, dim scaled by 4 / itemsize (a reduced one: statistic shapes do not change)
SHAPES = {
    "small": {"nchw": ((4, 32, 28, 28), 0), "nhwc": ((4, 32, 28, 28), 0),
              "rows": ((392, 256), 0), "ncl": ((16, 32, 196), 0),
              "odd": ((8, 14, 32, 28), 1)},
    "large": {"nchw": ((64, 128, 56, 56), 0), "nhwc": ((64, 128, 56, 56), 0),
              "rows": ((25088, 1024), 0), "ncl": ((256, 128, 784), 0),
              "odd": ((64, 56, 128, 56), 1)},
}
# Effective bytes moved per call, in units of x.nbytes (statistics are negligible):
# moments reads x; forward reads x, writes y (the statistics pass is fused into the
# same read when the data fits); inference reads x, writes y; backward reads dy and
# x, writes dx.
BYTES_PER_X = {"moments": 1, "batch_norm_forward": 2, "batch_norm_inference": 2,
               "batch_norm_backward": 3}
COPY_BYTES = 128 << 20     # size of each array of the copy-bandwidth reference


def skip(reason):
    """Mark the current parameter combination as not run (asv: skipped)."""
    raise NotImplementedError(reason)


def large_ok(layout, dtype):
    """The subset of (layout, dtype) that also runs at the large size."""
    return dtype == "float32" or layout == "nchw"


def shape_of(layout, dtype, size):
    base, dim = SHAPES[size][layout]
    shape = list(base)
    shape[dim] = shape[dim] * 4 // np.dtype(dtype).itemsize
    return tuple(shape)


def stat_dtype(dtype):
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


# ------------------------------------------------------------------ GPU presence
def gpu_device_nodes():
    """Cheap test (no CUDA initialisation) for an NVIDIA GPU on this machine;
    ``NBNORM_BENCH_CUDA=0`` turns the CUDA benchmarks off."""
    if os.environ.get("NBNORM_BENCH_CUDA", "1") == "0":
        return False
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False   # simulator timings mean nothing
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def _only(name):
    """The values a comma-separated ``NBNORM_BENCH_<name>`` keeps (None: all)."""
    value = os.environ.get(f"NBNORM_BENCH_{name}", "")
    return tuple(v.strip() for v in value.split(",") if v.strip()) or None


def static_skip(layout=None, dtype=None, size=None, backend="cpu", impl="nbnorm", **_):
    """Why a combination cannot run here, decided without importing anything
    heavy (None: it can, as far as we know before trying).  ``NBNORM_BENCH_IMPLS``
    and ``NBNORM_BENCH_SIZES`` (comma-separated) narrow a run, e.g. to nbnorm's
    own large cases when comparing two commits."""
    for name, value in (("IMPLS", impl), ("SIZES", size)):
        kept = _only(name)
        if kept is not None and value is not None and value not in kept:
            return f"left out by NBNORM_BENCH_{name}={','.join(kept)}"
    if size == "large" and not large_ok(layout, dtype):
        return "the large size runs for float32 (every layout) and nchw (every dtype) only"
    if impl != "nbnorm" and size == "small" and dtype != "float32":
        return "peers run float32 only at the small size"
    if impl == "numpy" and backend != "cpu":
        return "numpy runs on the CPU only (cupy is its CUDA peer)"
    if impl == "cupy" and backend != "cuda":
        return "cupy runs on CUDA only (numpy is its CPU peer)"
    if impl in ("torch", "cupy") and not have(impl):
        return f"{impl} is not installed"
    if backend == "cuda" and not gpu_device_nodes():
        return "no CUDA GPU"
    return None


def static_skips(params, param_names, **fixed):
    """For asv's ``skip_params`` attribute: every combination of ``params`` that
    :func:`static_skip` rules out (``fixed`` gives the arguments that are not
    parameters).  asv skips them quietly, without running ``setup``."""
    return [combo for combo in itertools.product(*params)
            if static_skip(**fixed, **dict(zip(param_names, combo)))]


def require(impl, backend, layout=None, dtype=None, size=None):
    """Skip (``NotImplementedError``) unless ``impl`` can run on ``backend`` here."""
    reason = static_skip(layout, dtype, size, backend, impl)
    if reason:
        skip(reason)
    if impl in ("torch", "cupy"):
        load(impl)
    if backend == "cuda":
        if impl == "nbnorm":
            from numba import cuda
            if not cuda.is_available():
                skip("numba.cuda: no usable GPU")
        elif impl == "torch" and not torch.cuda.is_available():
            skip("torch: no usable GPU")
        elif impl == "cupy" and cupy.cuda.runtime.getDeviceCount() < 1:
            skip("cupy: no usable GPU")


# ------------------------------------------------------------------ host data
_HOST = {}


def _fill(flat, seed):
    """Tile a fixed random block (mean 1.5, std 0.5) over a 1-D contiguous array."""
    block = (np.random.default_rng(seed).standard_normal(4096) * 0.5 + 1.5).astype(flat.dtype)
    full = flat.size // block.size
    flat[:full * block.size].reshape(full, block.size)[...] = block
    flat[full * block.size:] = block[:flat.size - full * block.size]


def host_array(layout, dtype, size, seed=0):
    """The logical input array (x for seed 0, dy for seed 1), cached per process."""
    key = (layout, dtype, size, seed)
    if key not in _HOST:
        shape = shape_of(layout, dtype, size)
        if layout == "nhwc":
            n, c, h, w = shape
            store = np.empty((n, h, w, c), dtype)
            view = store.transpose(0, 3, 1, 2)
        else:
            store = view = np.empty(shape, dtype)
        _fill(store.reshape(-1), seed)
        _HOST[key] = view
    return _HOST[key]


def host_stats(layout, dtype, size):
    """Statistic-shaped weight, bias, mean, var, invstd (constant fills)."""
    x_shape = shape_of(layout, dtype, size)
    sshape = tuple(s for d, s in enumerate(x_shape) if d not in AXES[layout])
    sdt = stat_dtype(dtype)
    return {name: np.full(sshape, value, sdt) for name, value in
            (("weight", 1.25), ("bias", 0.125), ("mean", 1.5), ("var", 0.25), ("invstd", 2.0))}


# ------------------------------------------------------------------ device transfer
def _dense_order(a):
    """Permutation that makes the strided view ``a`` C-contiguous, and its inverse."""
    order = tuple(int(i) for i in np.argsort([-s for s in a.strides], kind="stable"))
    inverse = tuple(int(i) for i in np.argsort(order))
    return order, inverse


def to_backend(impl, backend, a):
    """``a`` (host, possibly a transposed view) as ``impl``'s array on ``backend``,
    with the same logical shape and memory layout."""
    if backend == "cpu":
        return torch.from_numpy(a) if impl == "torch" else a
    order, inverse = _dense_order(a)
    dense = np.ascontiguousarray(a.transpose(order))
    if impl == "torch":
        return torch.from_numpy(dense).to("cuda").permute(inverse)
    if impl == "cupy":
        return cupy.asarray(dense).transpose(inverse)
    from numba import cuda
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    d = cuda.to_device(dense)
    if order == tuple(range(a.ndim)):
        return d
    view = dense.transpose(inverse)   # same logical shape/strides as ``a``
    return DeviceNDArray(view.shape, view.strides, view.dtype, gpu_data=d.gpu_data)


def empty_like(impl, backend, a):
    """An uninitialised array like ``a`` (same layout) for ``out=`` arguments."""
    if backend == "cpu" and impl != "torch":
        return np.empty_like(a)
    if impl == "nbnorm":
        from numba import cuda
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        order, inverse = _dense_order(a)
        d = cuda.device_array(tuple(a.shape[i] for i in order), dtype=a.dtype)
        strides = tuple(d.strides[i] for i in inverse)
        return DeviceNDArray(a.shape, strides, a.dtype, gpu_data=d.gpu_data)
    if impl == "torch":
        return torch.empty_like(a)
    return cupy.empty_like(a)


def synchronize(impl, backend):
    """A function that waits for ``impl``'s queued GPU work (no-op on the CPU)."""
    if backend == "cpu":
        return lambda: None
    if impl == "torch":
        return torch.cuda.synchronize
    if impl == "cupy":
        return cupy.cuda.Device().synchronize
    from numba import cuda
    return cuda.synchronize


# ------------------------------------------------------------------ peers: NumPy / CuPy
def _xp(impl):
    return cupy if impl == "cupy" else np


def _keep(a, x_ndim, axis):
    """Statistic-shaped ``a`` reshaped to broadcast against x (keepdims shape)."""
    shape, it = [], iter(a.shape)
    for d in range(x_ndim):
        shape.append(1 if d in axis else next(it))
    return a.reshape(shape)


def _xp_moments(xp, x, axis):
    sdt = stat_dtype(x.dtype)
    return x.mean(axis, dtype=sdt), x.var(axis, dtype=sdt)


def _xp_affine(xp, x, scale, shift):
    """y = x·scale + shift computed in the statistics' precision, stored in x's dtype."""
    y = xp.empty_like(x)
    xp.multiply(x, scale, out=y, casting="unsafe")
    xp.add(y, shift, out=y, casting="unsafe")
    return y


def _xp_forward(xp, x, w, b, axis):
    sdt = stat_dtype(x.dtype)
    mean = x.mean(axis, dtype=sdt, keepdims=True)
    var = x.var(axis, dtype=sdt, keepdims=True)
    invstd = 1 / xp.sqrt(var + sdt.type(EPS))
    scale = _keep(w, x.ndim, axis) * invstd
    y = _xp_affine(xp, x, scale, _keep(b, x.ndim, axis) - mean * scale)
    return y, mean, invstd


def _xp_inference(xp, x, mean, var, w, b, axis):
    sdt = stat_dtype(x.dtype)
    scale = _keep(w, x.ndim, axis) / xp.sqrt(_keep(var, x.ndim, axis) + sdt.type(EPS))
    return _xp_affine(xp, x, scale, _keep(b, x.ndim, axis) - _keep(mean, x.ndim, axis) * scale)


def _xp_backward(xp, dy, x, mean, invstd, w, axis):
    sdt = stat_dtype(x.dtype)
    n = x.size // mean.size
    mean, invstd = _keep(mean, x.ndim, axis), _keep(invstd, x.ndim, axis)
    xhat = xp.subtract(x, mean, dtype=sdt)
    xhat *= invstd
    dbias = dy.sum(axis, dtype=sdt, keepdims=True)
    dweight = xp.multiply(dy, xhat, dtype=sdt).sum(axis, keepdims=True)
    xhat *= dweight
    t = xp.multiply(dy, sdt.type(n), dtype=sdt)
    t -= dbias
    t -= xhat
    t *= _keep(w, x.ndim, axis) * invstd / sdt.type(n)
    return t.astype(x.dtype), dweight, dbias


# ------------------------------------------------------------------ peer: PyTorch
def _torch_2d(t, axis):
    """``t`` as torch's (N, C, ...) with the kept dims as dim 1: itself when it
    already is, else a (reduced, kept) 2-D copy (what a user would do), with
    the information to map results back."""
    kept = [d for d in range(t.dim()) if d not in axis]
    if kept == [1]:
        return t, None
    perm = list(axis) + kept
    tp = t.permute(perm)
    n_red = int(np.prod([t.shape[d] for d in axis]))
    return tp.reshape(n_red, -1), (tp.shape, perm)


def _torch_back(t, info):
    if info is None:
        return t
    shape, perm = info
    return t.reshape(shape).permute(tuple(int(i) for i in np.argsort(perm)))


def _torch_moments(x, axis):
    var, mean = torch.var_mean(x, dim=axis, correction=0)
    return mean, var


def _torch_forward(x, w, b, axis):
    x2, info = _torch_2d(x, axis)
    y, mean, invstd = torch.ops.aten.native_batch_norm(
        x2, w.reshape(-1), b.reshape(-1), None, None, True, 0.1, EPS)
    return _torch_back(y, info), mean, invstd


def _torch_inference(x, mean, var, w, b, axis):
    x2, info = _torch_2d(x, axis)
    y = torch.nn.functional.batch_norm(x2, mean.reshape(-1), var.reshape(-1), w.reshape(-1),
                                       b.reshape(-1), training=False, eps=EPS)
    return _torch_back(y, info)


def _torch_backward(dy, x, mean, invstd, w, axis):
    x2, info = _torch_2d(x, axis)
    dy2, _ = _torch_2d(dy, axis)
    dx, dw, db = torch.ops.aten.native_batch_norm_backward(
        dy2, x2, w.reshape(-1), None, None, mean.reshape(-1), invstd.reshape(-1), True, EPS,
        [True, True, True])
    return _torch_back(dx, info), dw, db


# ------------------------------------------------------------------ one benchmark case
class Case:
    """The inputs of one (op, layout, dtype, size, backend, impl) combination and a
    zero-argument callable ``run`` doing the op once and waiting for it to finish.

    Raises ``NotImplementedError`` (asv: skipped) for combinations that cannot
    run here.  ``out=True`` passes preallocated outputs to nbnorm (kernel time,
    no page faults of fresh outputs); by default each call allocates its outputs,
    as a user's call does.  ``run`` is called once here, so JIT compilation,
    kernel-cache loading and lazy library initialisation are not timed.
    """

    def __init__(self, op, layout, dtype, size, backend="cpu", impl="nbnorm", out=False,
                 warm=True):
        require(impl, backend, layout, dtype, size)
        self.op, self.layout, self.dtype, self.size = op, layout, dtype, size
        self.axis = AXES[layout]
        hx = host_array(layout, dtype, size, 0)
        self.nbytes = hx.nbytes * BYTES_PER_X[op]
        conv = lambda a: to_backend(impl, backend, a)  # noqa: E731
        self.x = conv(hx)
        self.dy = conv(host_array(layout, dtype, size, 1)) if op == "batch_norm_backward" else None
        self.s = {k: conv(v) for k, v in host_stats(layout, dtype, size).items()}
        self.out = empty_like(impl, backend, self.x) if out and op != "moments" else None
        self.sync = synchronize(impl, backend)
        self.run = self._build(impl)
        if warm:
            self.run()

    def _build(self, impl):
        x, dy, s, axis, out, sync = self.x, self.dy, self.s, self.axis, self.out, self.sync
        op = self.op
        if impl == "nbnorm":
            if op == "moments":
                f = lambda: nbnorm.moments(x, axis)  # noqa: E731
            elif op == "batch_norm_forward":
                f = lambda: nbnorm.batch_norm_forward(  # noqa: E731
                    x, s["weight"], s["bias"], axis=axis, eps=EPS, out=out)
            elif op == "batch_norm_inference":
                f = lambda: nbnorm.batch_norm_inference(  # noqa: E731
                    x, s["mean"], s["var"], s["weight"], s["bias"], axis=axis, eps=EPS, out=out)
            else:
                f = lambda: nbnorm.batch_norm_backward(  # noqa: E731
                    dy, x, s["mean"], s["invstd"], s["weight"], axis=axis, out=out)
        elif impl == "torch":
            if op == "moments":
                f = lambda: _torch_moments(x, axis)  # noqa: E731
            elif op == "batch_norm_forward":
                f = lambda: _torch_forward(x, s["weight"], s["bias"], axis)  # noqa: E731
            elif op == "batch_norm_inference":
                f = lambda: _torch_inference(  # noqa: E731
                    x, s["mean"], s["var"], s["weight"], s["bias"], axis)
            else:
                f = lambda: _torch_backward(  # noqa: E731
                    dy, x, s["mean"], s["invstd"], s["weight"], axis)
        else:
            xp = _xp(impl)
            if op == "moments":
                f = lambda: _xp_moments(xp, x, axis)  # noqa: E731
            elif op == "batch_norm_forward":
                f = lambda: _xp_forward(xp, x, s["weight"], s["bias"], axis)  # noqa: E731
            elif op == "batch_norm_inference":
                f = lambda: _xp_inference(  # noqa: E731
                    xp, x, s["mean"], s["var"], s["weight"], s["bias"], axis)
            else:
                f = lambda: _xp_backward(  # noqa: E731
                    xp, dy, x, s["mean"], s["invstd"], s["weight"], axis)

        def run():
            r = f()
            sync()
            return r
        return run


# ------------------------------------------------------------------ timing helpers
def best_time(fn, repeat=5):
    """Smallest wall time of ``repeat`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def alternating(fns, rounds):
    """Wall times (seconds) of ``rounds`` rounds in which each of ``fns`` is
    called once, in turn — so the drifts of a shared machine hit all alike:
    one list per function, in the order of ``fns``."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for t, fn in zip(times, fns):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return times


_COPY_GBPS = {}


def copy_bandwidth(backend, repeat=5):
    """The machine's copy bandwidth in GB/s (10⁹ B/s), measured in this process:
    best of ``repeat`` copies between two 128 MiB arrays, counted as 2 × 128 MiB
    (read + write).  CPU: ``np.copyto``; CUDA: a device-to-device copy."""
    if backend not in _COPY_GBPS:
        n = COPY_BYTES // 4
        if backend == "cpu":
            src = np.ones(n, np.float32)
            dst = np.zeros(n, np.float32)
            t = best_time(lambda: np.copyto(dst, src), repeat)
        else:
            from numba import cuda
            src = cuda.to_device(np.ones(n, np.float32))
            dst = cuda.device_array(n, np.float32)

            def copy():
                dst.copy_to_device(src)
                cuda.synchronize()
            copy()
            t = best_time(copy, repeat)
        _COPY_GBPS[backend] = 2 * COPY_BYTES / t / 1e9
    return _COPY_GBPS[backend]


# ------------------------------------------------------------------ memory helpers
def reset_peak_rss():
    """Reset the process's peak-RSS mark (Linux ``/proc/self/clear_refs``), so that
    asv's ``peakmem_`` (``ru_maxrss``) counts from the memory in use now; returns
    False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_and_peak():
    """(current RSS, peak RSS) of this process in bytes, from ``/proc/self/status``."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                vals[key] = int(kb) * 1024
    return vals["VmRSS:"], vals["VmHWM:"]
