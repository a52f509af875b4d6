"""Launching the CUDA kernels: a plan's arrays on the device, the thread
mapping and reduction split (:class:`DevPlan`), and one helper per element
kernel (``welford``, ``dual_sums``, ``affine``) and for the per-statistic
merge (``finalize``)."""
from __future__ import annotations

from collections import OrderedDict
from math import prod

import numpy as np
from numba import cuda

from .. import _layout
from . import kernels as K
from .arrays import _flat, stat_dtype
from .device import SIM, TPB

#: launch constants on a GPU; the simulator, which runs each thread in Python,
#: uses small ones.  PER_THREAD: elements per thread before a row item gets more
#: threads; TARGET_THREADS: threads to keep in flight (fills an H100/H200);
#: MIN_CHUNK: fewest elements a split reduction chunk holds — small enough that
#: (64, 128, 7, 7) splits its 128 statistics into 3 chunks each (384 blocks for
#: 132 SMs, not 128)
GPU_CONSTANTS = {"PER_THREAD": 16, "TARGET_THREADS": 1 << 18, "MIN_CHUNK": 1024}
PER_THREAD = 2 if SIM else GPU_CONSTANTS["PER_THREAD"]
TARGET_THREADS = 512 if SIM else GPU_CONSTANTS["TARGET_THREADS"]
MIN_CHUNK = 64 if SIM else GPU_CONSTANTS["MIN_CHUNK"]
MAX_CHUNK = 1 << 24                    # float32 partial counts stay exact


def blocks(n):
    return max(1, -(-n // TPB))


def next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


#: read-only device constants (plan arrays, unit parameter vectors) by context
#: and content; least recently used first, at most CACHE_SIZE
_constants = OrderedDict()
CACHE_SIZE = 512


def _cached(key, make_host):
    """The device constant stored under ``(context, *key)``, made from
    ``make_host()`` on a miss: copied synchronously and the context
    synchronized, so that a kernel on any stream — also a non-blocking one —
    finds it complete.  Later calls copy nothing."""
    key = (0 if SIM else cuda.current_context().handle.value,) + key
    d = _constants.get(key)
    if d is None:
        d = cuda.to_device(make_host())
        if not SIM:
            cuda.synchronize()
        _constants[key] = d
        if len(_constants) > CACHE_SIZE:
            _constants.popitem(last=False)
    else:
        _constants.move_to_end(key)
    return d


def device_constant(host):
    """A device copy of the small array ``host`` that kernels only read, made
    once per context (see :func:`_cached`; keyed by its bytes)."""
    host = np.ascontiguousarray(host)
    return _cached((host.dtype.str, host.shape, host.tobytes()), lambda: host)


def filled(n, value):
    """A read-only float64 device vector of ``n`` copies of ``value`` (unit
    weights, zero biases), keyed by ``(n, value)``: no host array is built
    once it exists."""
    return _cached(("filled", int(n), float(value)), lambda: np.full(n, float(value)))


def to_device_ints(host, stream, lengths):
    """Views of the pieces of one int64 device constant (see :func:`device_constant`)."""
    d = device_constant(np.asarray(host, dtype=np.int64))
    out, at = [], 0
    for n in lengths:
        out.append(d[at:at + n])
        at += n
    return out


def strides_of(*arrays):
    return [list(_layout.element_strides(a, "array")) for a in arrays]


class DevPlan:
    """A :class:`~nbnorm._layout.Plan` with its arrays on the device, the
    thread mapping (``inner_kept``) and the reduction split.  ``strides``:
    each operand's element strides over ``shape``."""

    def __init__(self, shape, axis, strides, stream):
        plan = _layout.make_plan(shape, axis, strides)
        self.plan = plan
        nops, nk = plan.kept_strides.shape
        nr = plan.red_sizes.size
        host = np.concatenate([plan.kept_sizes, plan.stat_strides, plan.kept_strides.ravel(),
                               plan.red_sizes, plan.red_strides.ravel(), plan.bases])
        ks, ss, kst, rs, rst, bases = to_device_ints(host, stream,
                                                 [nk, nk, nops * nk, nr, nops * nr, nops])
        self.args = (ks, ss.reshape(1, nk), kst.reshape(nops, nk), rs,
                     rst.reshape(nops, nr), bases)
        self.n = plan.n
        self.n_stats = plan.n_stats
        self.inner_kept = plan.inner_kept
        if self.inner_kept:
            kin = int(plan.kept_sizes[-1])
            self.width = min(K.WARP, next_pow2(kin))           # TX
            self.n_tiles = -(-kin // self.width)
            items = (plan.n_stats // kin) * self.n_tiles
            min_chunk = max(TPB // self.width, MIN_CHUNK // self.width)
            self.chunk, self.n_chunks = split(plan.n, items * TPB, min_chunk)
            self.grid = items * self.n_chunks
        else:
            self.width = min(TPB, next_pow2(-(-plan.n // PER_THREAD)))   # G
            self.n_tiles = 1
            chunk_threads = plan.n_stats * (TPB if self.width == TPB else 0)
            self.chunk, self.n_chunks = split(plan.n, chunk_threads, MIN_CHUNK)
            self.grid = max(1, -(-(plan.n_stats * self.n_chunks) // (TPB // self.width)))

    def shape_args(self):
        """Trailing launch arguments of the element kernels."""
        return (self.n, self.n_stats, self.chunk, self.n_chunks, self.width, self.n_tiles)

    def kernel(self, acc, name):
        """Element kernel ``name`` for accumulator dtype ``acc`` and this mapping."""
        return K.ELEMENT[(np.dtype(acc), self.inner_kept)][name]


def split(n, threads, min_chunk):
    """``(chunk, n_chunks)`` for a reduction of length ``n`` whose unsplit
    launch runs ``threads`` threads (0: splitting would not help)."""
    n_chunks = 1
    if 0 < threads < TARGET_THREADS:
        n_chunks = max(1, min(-(-TARGET_THREADS // threads), n // max(min_chunk, 1)))
    n_chunks = max(n_chunks, -(-n // MAX_CHUNK))
    chunk = max(1, -(-n // n_chunks))
    return chunk, max(1, -(-n // chunk))


def stat_layout(a):
    """``(sizes, strides, base)`` of a per-statistic array for ``gather``."""
    shape = tuple(a.shape) or (1,)
    strides = _layout.element_strides(a, "array") if a.ndim else [0]
    _, base = _layout.flat_extent(a.shape, strides if a.ndim else ())
    return np.array(shape, np.int64), np.array(strides, np.int64), base


def vector(a, stream):
    """A per-statistic array as a contiguous float64 device vector."""
    out = cuda.device_array(max(1, prod(a.shape)), np.float64, stream=stream)
    sizes, strides, base = stat_layout(a)
    dsz, dst = to_device_ints(np.concatenate([sizes, strides]), stream, [len(sizes)] * 2)
    K.gather[blocks(out.size), TPB, stream](_flat(a), base, dsz, dst.reshape(1, -1), out)
    return out


def param(a, stream, dummy):
    """``(vector, present)`` for an optional per-statistic parameter."""
    return (dummy, False) if a is None else (vector(a, stream), True)


def acc_dtype(x):
    return stat_dtype(x.dtype)


def welford(x, dp, p, stream, skipna=False):
    """Per-chunk partials of ``x − pivot`` (plan row ``p``; NaNs left out with
    ``skipna``) and the per-statistic pivots:
    ``(part_count, part_mean, part_m2, pivots)``."""
    acc = acc_dtype(x)
    size = dp.n_chunks * dp.n_stats
    part_count, part_mean, part_m2 = (cuda.device_array(size, acc, stream=stream)
                                      for _ in range(3))
    pivots = cuda.device_array(dp.n_stats, np.float64, stream=stream)
    dp.kernel(acc, "welford")[dp.grid, TPB, stream](_flat(x), *dp.args, p, bool(skipna), *dp.shape_args(),
                               part_count, part_mean, part_m2, pivots)
    return part_count, part_mean, part_m2, pivots


def finalize(x, dp, partials, inv_dof, stream, training=False, eps=0.0, w=None, b=None,
              acc=None, rms=False, skipna=False, keep_centre=False):
    """Merge the partials: ``(mean, var = M2·inv_dof, invstd, centre, α, β)`` in
    ``acc`` (the accumulator type unless given; float64 for states); ``rms``:
    ``var`` is ``mean(x²)`` and the centre 0 (see ``per_stat.finalize_welford``,
    which recomputes an overflowed statistic from ``x``, plan row 0)."""
    acc = acc or acc_dtype(x)
    m = dp.n_stats
    mean, var = (cuda.device_array(m, acc, stream=stream) for _ in range(2))
    dummy = cuda.device_array(1, np.float64, stream=stream)
    if training:
        invstd, alpha, beta = (cuda.device_array(m, acc, stream=stream) for _ in range(3))
        centre = cuda.device_array(2 * m, np.float64, stream=stream)
    else:
        invstd = alpha = beta = cuda.device_array(1, acc, stream=stream)
        centre = dummy
    wv, hw = param(w, stream, dummy)
    bv, hb = param(b, stream, dummy)
    lanes = min(K.WARP, next_pow2(dp.n_chunks))
    K.finalize_welford[blocks(m * lanes), TPB, stream](
        *partials, dp.n_chunks, m, lanes, float(inv_dof), bool(training), bool(rms), float(eps),
        wv, hw, bv, hb, _flat(x), *dp.args, 0, bool(skipna), dp.n, bool(keep_centre), mean, var,
        invstd, centre, alpha, beta)
    return mean, var, invstd, centre.reshape(2, -1) if training else centre, alpha, beta


def affine(out, dp, rows, u, cu, ca, v, cv, cb, cc, stream, w=None, b=None):
    """``out = ((u − cu)·ca)·w + b + (v − cv)·cb + cc``.

    ``cu``/``cv`` are float64 ``(1, m)`` means or ``(2, m)`` (pivot, relative
    mean) centres (:func:`~nbnorm._cuda.device.centred`), ``ca``/``cb``/``cc``
    accumulator-typed per-statistic coefficients; ``w``/``b`` float64 vectors
    read per element through plan row ``rows[3]`` (None: not read); ``cu``
    None: the first term is ``u·ca``; ``v`` None: the ``v`` term is not
    evaluated (``v``, ``cv`` and ``cb`` are not read).
    """
    fo, fu = _flat(out), _flat(u)
    dummy = cuda.device_array((1, 1), np.float64, stream=stream)
    vec = dummy.reshape(1)
    dp.kernel(acc_dtype(u), "affine")[dp.grid, TPB, stream](
        fo, fu, fu if v is None else _flat(v), vec if w is None else w, vec if b is None else b,
        *dp.args, *rows, cu is not None, dummy if cu is None else cu, ca, v is not None,
        dummy if v is None else cv, ca if v is None else cb, cc, w is not None,
        *dp.shape_args())


def dual_sums(dy, x, dp, rows, w, mu, inv, stream):
    """Per-chunk partials ``(Σg, Σg·(x − mu)[·inv])`` with ``g = dy·w``: ``w``
    (None: 1) read per element by plan row ``rows[2]``, ``mu``/``inv`` (None:
    unscaled) by row ``rows[3]``; rows of ``dy`` and ``x`` first."""
    acc = acc_dtype(x)
    p1, p2 = (cuda.device_array(dp.n_chunks * dp.n_stats, acc, stream=stream) for _ in range(2))
    dummy = cuda.device_array(1, np.float64, stream=stream)
    dp.kernel(acc, "dual_sums")[dp.grid, TPB, stream](
        _flat(dy), _flat(x), dummy if w is None else w, mu, dummy if inv is None else inv,
        *dp.args, *rows, w is not None, inv is not None, *dp.shape_args(), p1, p2)
    return p1, p2


