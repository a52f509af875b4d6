"""Self-check and benchmark of every public operation (``python -m nbnorm``).

For each operation and memory layout: run nbnorm, check it against the
float64 reference (:mod:`nbnorm.reference`), time it (median of repeats)
beside NumPy and, when importable, PyTorch CPU, and express the time as
effective bandwidth: the bytes an ideal kernel must move (below) over the
time, and as a fraction of this machine's copy bandwidth measured in the
same process (:mod:`._bandwidth`).  The peers are :mod:`._peers`'
``numpy-plain`` (``cupy-plain`` on the GPU rows) and ``torch-functional``.

Byte model (``S`` = size of ``x`` in bytes):
moments ``S`` (read x) · forward ``2S`` (read x, write y) ·
inference ``2S`` · backward ``3S`` (read dy and x, write dx).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import _api as nb
from . import reference as ref
from ._bandwidth import copy_bandwidth
from ._peers import autograd, peer

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


#: the short names of the rows, nbnorm's names of the operations
OPS = {"moments": "moments", "forward": "batch_norm_forward",
       "inference": "batch_norm_inference", "backward": "batch_norm_backward"}


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _numpy_peer(op, x, dy, axis, w, b, mean, var, invstd):
    """What a NumPy user writes for ``op`` (:mod:`._peers`' ``numpy-plain``;
    statistics in keepdims shapes and x's dtype), bound to the arrays."""
    args = {"moments": (x,), "forward": (x, w, b), "inference": (x, mean, var, w, b),
            "backward": (dy, x, mean, invstd, w)}[op]
    return peer("numpy-plain", OPS[op])(*args, axis=axis)


def _torch_peer(op, x, dy, axis, mean, var, channels_last):
    """PyTorch CPU's ``op`` on the 4-D ``x`` (:mod:`._peers`' ``torch-functional``):
    ``torch.var_mean``, ``F.batch_norm`` in training and eval mode without
    weight and bias, and autograd's backward through ``F.batch_norm`` (the
    forward graph built here, outside the timed call)."""
    import torch
    tx, tdy = torch.from_numpy(np.asarray(x)), torch.from_numpy(dy)
    if channels_last:
        tx = tx.contiguous(memory_format=torch.channels_last)
        tdy = tdy.contiguous(memory_format=torch.channels_last)
    if op == "moments":
        return peer("torch-functional", "moments")(tx, axis=axis)
    if op == "forward":
        return peer("torch-functional", "batch_norm_forward")(tx, None, None, axis=axis)
    if op == "inference":
        tm, tv = (torch.from_numpy(np.ascontiguousarray(v).reshape(-1)) for v in (mean, var))
        return peer("torch-functional", "batch_norm_inference")(tx, tm, tv, None, None,
                                                                axis=axis)
    xg = tx.detach().requires_grad_(True)
    y = peer("torch-functional", "batch_norm_forward")(xg, None, None, axis=axis)()
    return autograd(y, (xg,), tdy)


def run_cases(shape, dtype, repeat=5, with_peers=True, layout_names=None, seed=0):
    """Check and time every operation on every layout; returns a list of Rows."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(shape, dtype=np.float32) * 2 + 3).astype(dtype)
    grad = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    copy_bw = copy_bandwidth(base.nbytes)
    with_torch = with_peers and _have_torch()
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
        stats = {k: v.reshape(keep).astype(dtype) for k, v in
                 (("w", w), ("b", b), ("mean", mean), ("var", var), ("invstd", invstd))}
        for op, (fast, slow) in calls.items():
            got, want = fast(), slow()
            if op == "moments":
                err = max(_scaled_error(got[0], want[0]), _scaled_error(got[1], want[1]))
            else:
                err = _scaled_error(got, want)
            t = median_time(fast, repeat)
            t_np = t_th = np.nan
            if with_peers:
                t_np = median_time(_numpy_peer(op, x, dy, axis, **stats), max(1, repeat // 2))
            if with_torch and axis == (0, 2, 3) and dtype != np.float16:
                t_th = median_time(_torch_peer(op, x, dy, axis, stats["mean"], stats["var"],
                                               channels_last=lname.startswith("NHWC")), repeat)
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
    float64 reference; GB/s against a device-to-device copy
    (:func:`._bandwidth.copy_bandwidth`); speed-up over CuPy's ``moments`` and
    normalization without weight and bias (:mod:`._peers`' ``cupy-plain``)
    when CuPy is importable."""
    from numba import cuda
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(shape, dtype=np.float32) * 2 + 3).astype(dtype)
    grad = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    copy_bw = copy_bandwidth(base.nbytes, "cuda")
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
                args = (xc,) if op == "moments" else (xc, None, None)
                t_cp = cuda_median_time(peer("cupy-plain", OPS[op])(*args, axis=axis), repeat)
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
