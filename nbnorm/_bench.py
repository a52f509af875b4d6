"""Self-check and benchmark of every public operation (``python -m nbnorm``).

For each operation and memory layout: run nbnorm, check it against the
float64 reference (:mod:`nbnorm.reference`), time it (median of repeats)
beside NumPy and, when importable, PyTorch CPU, and express the time as
effective bandwidth: the bytes an ideal kernel must move (below) over the
time, and as a fraction of this machine's copy bandwidth measured in the
same process.

Byte model (``S`` = size of ``x`` in bytes):
moments ``S`` (read x) · forward ``2S`` (read x, write y) ·
inference ``2S`` · backward ``3S`` (read dy and x, write dx).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from . import _api as nb
from . import reference as ref

#: scaled-error tolerance per dtype: max|got − ref| / max|ref|
TOLERANCE = {np.dtype(np.float16): 4e-3, np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}
BYTES = {"moments": 1, "forward": 2, "inference": 2, "backward": 3}


def write_between(path, name, text):
    """Replace what lies between the ``<!-- name:start -->`` and
    ``<!-- name:end -->`` markers of the file ``path`` with ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    a, b = doc.index(start) + len(start), doc.index(end)
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc[:a] + "\n" + text.rstrip() + "\n" + doc[b:])


def median_time(fn, repeat):
    """Median wall time of ``fn()`` over ``repeat`` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@njit(parallel=True, cache=True)
def _parallel_copy(dst, src):
    n = src.size
    step = 1 << 16
    for i_ in prange((n + step - 1) // step):
        i = np.int64(i_)
        lo = i * step
        hi = min(lo + step, n)
        dst[lo:hi] = src[lo:hi]


def copier(nbytes):
    """``(copy, moved)``: a function making one multi-threaded copy of
    ``nbytes`` between two arrays already in memory, and the bytes it moves
    (read + write)."""
    src = np.ones(max(nbytes // 8, 1))
    dst = np.empty_like(src)
    _parallel_copy(dst, src)
    return (lambda: _parallel_copy(dst, src)), 2 * src.nbytes


def copy_bandwidth(nbytes, repeat=9):
    """Bytes/s of :func:`copier`'s copy of ``nbytes``; the best of ``repeat``
    runs, since it stands for what the machine can do."""
    copy, moved = copier(nbytes)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        copy()
        times.append(time.perf_counter() - t0)
    return moved / min(times)


def layouts(shape):
    """``{name: (make_view, axis)}``: NCHW, channels-last viewed as NCHW, rows."""
    n, c = shape[0], shape[1]
    rest = int(np.prod(shape[2:]))
    return {
        "NCHW": (lambda a: a, (0, 2, 3)),
        "NHWC-as-NCHW": (lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1)).transpose(0, 3, 1, 2),
                         (0, 2, 3)),
        "rows (N*C, H*W)": (lambda a: a.reshape(n * c, rest), (1,)),
    }


# --------------------------------------------------------------- peers
def numpy_ops(eps=1e-5):
    """What a NumPy user writes instead, per operation."""
    def moments(x, axis, **_):
        return x.mean(axis=axis), x.var(axis=axis)

    def forward(x, axis, w, b, **_):
        m = x.mean(axis=axis, keepdims=True)
        v = x.var(axis=axis, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * w + b

    def inference(x, axis, mean, var, w, b, **_):
        return (x - mean) / np.sqrt(var + eps) * w + b

    def backward(x, axis, dy, mean, invstd, w, **_):
        n = x.size // mean.size
        xhat = (x - mean) * invstd
        sdy = dy.sum(axis=axis, keepdims=True)
        sdyx = (dy * xhat).sum(axis=axis, keepdims=True)
        return w * invstd / n * (n * dy - sdy - xhat * sdyx)

    return {"moments": moments, "forward": forward, "inference": inference, "backward": backward}


def torch_ops(eps=1e-5):
    """PyTorch CPU equivalents (4-D, statistics over (0, 2, 3) only), or {}."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}

    def forward(x, **_):
        return F.batch_norm(x, None, None, training=True, eps=eps)

    def inference(x, mean, var, **_):
        return F.batch_norm(x, mean, var, training=False, eps=eps)

    def moments(x, **_):
        return torch.var_mean(x, dim=(0, 2, 3), correction=0)

    graphs = {}

    def backward(x, dy, **_):
        """Autograd's backward through batch_norm only (the forward graph is
        built once, outside the timed call)."""
        if id(x) not in graphs:
            xg = x.detach().requires_grad_(True)
            graphs[id(x)] = (xg, F.batch_norm(xg, None, None, training=True, eps=eps))
        xg, y = graphs[id(x)]
        return torch.autograd.grad(y, xg, dy, retain_graph=True)[0]

    return {"moments": moments, "forward": forward, "inference": inference, "backward": backward}


# ------------------------------------------------------------- the cases
@dataclass
class Row:
    op: str
    shape: tuple
    layout: str
    dtype: str
    seconds: float
    gbps: float
    copy_fraction: float
    vs_numpy: float
    vs_torch: float
    error: float
    ok: bool


def _scaled_error(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    return float(np.max(np.abs(got - want))) / scale


def run_cases(shape, dtype, repeat=5, with_peers=True, layout_names=None, seed=0):
    """Check and time every operation on every layout; returns a list of Rows."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(shape, dtype=np.float32) * 2 + 3).astype(dtype)
    grad = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    copy_bw = copy_bandwidth(base.nbytes)
    npo = numpy_ops() if with_peers else {}
    tho = torch_ops() if with_peers else {}
    rows = []
    for lname, (make, axis) in layouts(shape).items():
        if layout_names and lname not in layout_names:
            continue
        x = make(base)
        dy = make(grad)
        c = int(np.prod([s for d, s in enumerate(x.shape) if d not in axis]))
        sshape = tuple(s for d, s in enumerate(x.shape) if d not in axis)
        w = (rng.standard_normal(c) * 0.5 + 1).reshape(sshape)
        b = rng.standard_normal(c).reshape(sshape)
        y, mean, invstd = nb.batch_norm_forward(x, w, b, axis=axis)
        var = (1.0 / invstd.astype(np.float64) ** 2 - 1e-5).astype(mean.dtype)
        keep = tuple(1 if d in axis else s for d, s in enumerate(x.shape))
        calls = {
            "moments": (lambda: nb.moments(x, axis),
                        lambda: ref.moments(x, axis)),
            "forward": (lambda: nb.batch_norm_forward(x, w, b, axis=axis)[0],
                        lambda: ref.batch_norm_forward(x, w, b, axis=axis)[0]),
            "inference": (lambda: nb.batch_norm_inference(x, mean, var, w, b, axis=axis),
                          lambda: ref.batch_norm_inference(x, mean, var, w, b, axis=axis)),
            "backward": (lambda: nb.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)[0],
                         lambda: ref.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)[0]),
        }
        peer_args = dict(x=x, axis=axis, w=w.reshape(keep).astype(dtype), b=b.reshape(keep).astype(dtype),
                         dy=dy, mean=mean.reshape(keep).astype(dtype),
                         var=var.reshape(keep).astype(dtype), invstd=invstd.reshape(keep).astype(dtype))
        for op, (fast, slow) in calls.items():
            got, want = fast(), slow()
            if op == "moments":
                err = max(_scaled_error(got[0], want[0]), _scaled_error(got[1], want[1]))
            else:
                err = _scaled_error(got, want)
            t = median_time(fast, repeat)
            t_np = median_time(lambda: npo[op](**peer_args), max(1, repeat // 2)) if op in npo else np.nan
            t_th = np.nan
            if op in tho and axis == (0, 2, 3) and dtype != np.float16:
                import torch
                targs = {k: (torch.from_numpy(np.ascontiguousarray(v).reshape(-1)) if k in ("mean", "var") else
                             torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                         for k, v in peer_args.items()}
                targs["x"] = torch.from_numpy(np.asarray(x))
                if lname.startswith("NHWC"):
                    targs["x"] = targs["x"].contiguous(memory_format=torch.channels_last)
                    targs["dy"] = targs["dy"].contiguous(memory_format=torch.channels_last)
                t_th = median_time(lambda: tho[op](**targs), repeat)
            gbps = BYTES[op] * x.nbytes / t
            rows.append(Row(op, tuple(x.shape), lname, dtype.name, t, gbps / 1e9, gbps / copy_bw,
                            t_np / t, t_th / t, err, err <= TOLERANCE[dtype]))
    return rows, copy_bw


def gpu_available():
    """True when a real CUDA GPU (not the simulator) can run the CUDA backend."""
    try:
        from numba import config, cuda
    except ImportError:
        return False
    if config.ENABLE_CUDASIM:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def cuda_median_time(fn, repeat):
    """Median GPU time of ``fn()`` (synchronized), after one warm-up."""
    from numba import cuda
    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_cuda_cases(shape, dtype, repeat=5, seed=0):
    """GPU rows: every operation on Numba device arrays, checked against the
    float64 reference; GB/s against a device-to-device copy; speed-up over
    CuPy mean/var/normalize when CuPy is importable."""
    from numba import cuda
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(shape, dtype=np.float32) * 2 + 3).astype(dtype)
    grad = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    src = cuda.to_device(base.reshape(-1))
    dst = cuda.device_array_like(src)
    copy_bw = 2 * base.nbytes / cuda_median_time(lambda: dst.copy_to_device(src), repeat)
    try:
        import cupy as cp
    except ImportError:
        cp = None
    rows = []
    from ._cuda.backend import to_device_like
    for lname, (make, axis) in layouts(shape).items():
        xh, dyh = make(base), make(grad)
        xd, dyd = to_device_like(xh), to_device_like(dyh)
        y, mean, invstd = nb.batch_norm_forward(xd, axis=axis)
        mh, ih = mean.copy_to_host(), invstd.copy_to_host()
        varh = (1.0 / ih.astype(np.float64) ** 2 - 1e-5).astype(mh.dtype)
        vard = cuda.to_device(varh)
        calls = {
            "moments": (lambda: nb.moments(xd, axis), lambda: ref.moments(xh, axis)),
            "forward": (lambda: nb.batch_norm_forward(xd, axis=axis)[0],
                        lambda: ref.batch_norm_forward(xh, axis=axis)[0]),
            "inference": (lambda: nb.batch_norm_inference(xd, mean, vard, axis=axis),
                          lambda: ref.batch_norm_inference(xh, mh, varh, axis=axis)),
            "backward": (lambda: nb.batch_norm_backward(dyd, xd, mean, invstd, axis=axis)[0],
                         lambda: ref.batch_norm_backward(dyh, xh, mh, ih, axis=axis)[0]),
        }
        for op, (fast, slow) in calls.items():
            got = fast()
            got = tuple(g.copy_to_host() for g in got) if isinstance(got, tuple) else got.copy_to_host()
            want = slow()
            err = (max(_scaled_error(got[0], want[0]), _scaled_error(got[1], want[1]))
                   if op == "moments" else _scaled_error(got, want))
            t = cuda_median_time(fast, repeat)
            t_cp = np.nan
            if cp is not None and op in ("moments", "forward"):
                xc = cp.asarray(xd)
                if op == "moments":
                    t_cp = cuda_median_time(lambda: (xc.mean(axis=axis), xc.var(axis=axis)), repeat)
                else:
                    t_cp = cuda_median_time(
                        lambda: (xc - xc.mean(axis=axis, keepdims=True))
                        / cp.sqrt(xc.var(axis=axis, keepdims=True) + 1e-5), repeat)
            gbps = BYTES[op] * base.nbytes / t
            rows.append(Row(op, tuple(xh.shape), lname + " (GPU)", dtype.name, t, gbps / 1e9,
                            gbps / copy_bw, t_cp / t, np.nan, err, err <= TOLERANCE[dtype]))
    return rows, copy_bw


def format_table(rows):
    head = ("op", "shape", "layout", "dtype", "time ms", "GB/s", "of copy", "vs NumPy*", "vs torch",
            "max err", "check")
    lines = [head]
    for r in rows:
        lines.append((r.op, "x".join(map(str, r.shape)), r.layout, r.dtype, f"{r.seconds * 1e3:.2f}",
                      f"{r.gbps:.1f}", f"{r.copy_fraction:.0%}",
                      "-" if np.isnan(r.vs_numpy) else f"{r.vs_numpy:.1f}x",
                      "-" if np.isnan(r.vs_torch) else f"{r.vs_torch:.1f}x",
                      f"{r.error:.1e}", "ok" if r.ok else "FAIL"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(str(v).ljust(wd) for v, wd in zip(line, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * wd for wd in widths))
    return "\n".join(out)
