"""The benchmark grid — operations, layouts, dtypes, sizes, backends and
implementations — its input data, and :class:`Case`, one combination ready
to run.

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
``nchw`` (:func:`.skips.large_ok`); every op × layout × dtype runs at the
small size (the peers: float32 only at the small size).

Implementations (``impl`` × ``backend``): ``nbnorm`` (cpu, cuda); the peers
``numpy`` (cpu), ``cupy`` (cuda) — the same array-API code, written as a
user would — and ``torch`` (cpu, cuda; ``torch.ops.aten.native_batch_norm``
and friends, the kernels behind ``torch.nn.BatchNorm*``), all from the one
table of peers, :mod:`nbnorm._peers`.  Combinations that cannot run here
(no GPU, peer not installed, numpy on cuda, cupy on cpu, outside the
large-size subset) are listed in each class's asv ``skip_params``
(:func:`.skips.static_skips`; no process work at all) or raise
``NotImplementedError`` in ``setup`` (e.g. a GPU the driver cannot use):
asv records them as skipped, not failed.  Inputs are filled with a cheap
deterministic pattern (a fixed random block of 4096 values, mean ≈ 1.5,
std ≈ 0.5, tiled), so building a 100 MB input costs a memory write, not a
random-number generator.
"""
from __future__ import annotations

import numpy as np

import nbnorm
from nbnorm._peers import EPS, peer, stat_dtype

from .device import empty_like, synchronize, to_backend
from .skips import require

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

def shape_of(layout, dtype, size):
    base, dim = SHAPES[size][layout]
    shape = list(base)
    shape[dim] = shape[dim] * 4 // np.dtype(dtype).itemsize
    return tuple(shape)


# ------------------------------------------------------------------ host data
_HOST = {}


def fill(flat, seed):
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
        fill(store.reshape(-1), seed)
        _HOST[key] = view
    return _HOST[key]


def host_stats(layout, dtype, size):
    """Statistic-shaped weight, bias, mean, var, invstd (constant fills)."""
    x_shape = shape_of(layout, dtype, size)
    sshape = tuple(s for d, s in enumerate(x_shape) if d not in AXES[layout])
    sdt = stat_dtype(dtype)
    return {name: np.full(sshape, value, sdt) for name, value in
            (("weight", 1.25), ("bias", 0.125), ("mean", 1.5), ("var", 0.25), ("invstd", 2.0))}


# ------------------------------------------------------------------ one benchmark case
class Case:
    """The inputs of one (op, layout, dtype, size, backend, impl) combination and a
    zero-argument callable ``run`` doing the op once and waiting for it to finish.

    Raises ``NotImplementedError`` (asv: skipped) for combinations that cannot
    run here.  ``out=True`` passes preallocated outputs to nbnorm (kernel time,
    no page faults of fresh outputs); by default each call allocates its outputs,
    as a user's call does.  ``run`` is called once here, so JIT compilation,
    kernel-cache loading and lazy library initialisation are not timed.  The
    peers are :mod:`nbnorm._peers`' ``numpy``, ``cupy`` and ``torch``.
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
        else:
            arrays = {"moments": (x,), "batch_norm_forward": (x, s["weight"], s["bias"]),
                      "batch_norm_inference": (x, s["mean"], s["var"], s["weight"], s["bias"]),
                      "batch_norm_backward": (dy, x, s["mean"], s["invstd"], s["weight"])}[op]
            f = peer(impl, op)(*arrays, axis=axis)

        def run():
            r = f()
            sync()
            return r
        return run
