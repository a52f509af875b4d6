"""CUDA backend: device arrays in and out, Numba CUDA kernels in between.

Accepts any ``__cuda_array_interface__`` object (Numba device arrays, CuPy,
PyTorch CUDA tensors) and the simulator's device arrays, without copying
them; builds the :class:`~nbnorm._layout.Plan`, picks the thread mapping and
the reduction split, launches the kernels of :mod:`nbnorm._cuda.kernels` on
the stream of ``x`` and returns new arrays as the caller's type.

Stream rule: kernels run on the stream ``x`` says it is on (the CAI
``stream`` field, which CuPy and PyTorch set to their current stream;
Numba's array ``.stream``; else the default stream).  Any other operand on a
different stream is synchronized before the first launch, so the caller
never races a kernel; results are bound to that same stream.
"""
from __future__ import annotations

from math import prod

import numpy as np
from numba import cuda

from .. import _layout
from . import kernels as K
from . import states as S

name = "cuda"

SIM = K.SIM
TPB = K.TPB
PER_THREAD = 2 if SIM else 16          # elements per thread before a row item gets more threads
TARGET_THREADS = 512 if SIM else 1 << 18   # threads to keep in flight (fills an H100/H200)
MIN_CHUNK = 64 if SIM else 4096        # fewest elements a split reduction chunk holds
MAX_CHUNK = 1 << 24                    # float32 partial counts stay exact


# ------------------------------------------------------------------ arrays
def _is_sim_array(obj):
    return type(obj).__module__.startswith("numba.cuda.simulator")


def asarray(obj, argname):
    """A Numba device array (or simulator array) viewing ``obj``'s memory."""
    if SIM:
        if _is_sim_array(obj):
            return obj
        raise TypeError(f"{argname}: the CUDA simulator only accepts its own device arrays, "
                        f"got {type(obj).__module__}.{type(obj).__qualname__}")
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    if isinstance(obj, DeviceNDArray):
        return obj
    try:
        return cuda.as_cuda_array(obj, sync=False)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise TypeError(f"{argname}: cannot use {type(obj).__qualname__} as a CUDA array: {e}") \
            from None


#: an argument written in place is any device array ``asarray`` accepts (writable by nature)
target = asarray


def to_device_like(host):
    """Copy ``host`` to the device keeping its exact layout (strides, gaps,
    negative steps): the memory block it views is copied whole, and a device
    view with ``host``'s shape and strides is returned."""
    owner = host
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    owner = np.asarray(owner)
    if not (owner.flags.c_contiguous or owner.flags.f_contiguous):
        raise ValueError("to_device_like: the array's memory owner must be contiguous")
    d = cuda.to_device(owner.ravel(order="K").view(np.uint8))
    shift = host.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(np.lib.stride_tricks.as_strided(
            d._ary[shift:].view(host.dtype), host.shape, host.strides))
    cai = d.__cuda_array_interface__
    desc = {"shape": host.shape, "strides": host.strides, "typestr": host.dtype.str, "version": 3,
            "data": (cai["data"][0] + shift, False), "stream": None}
    return cuda.from_cuda_array_interface(desc, owner=d, sync=False)


def wrap(result, like):
    """``result`` as the caller's array type (zero copy): CuPy in → CuPy out,
    PyTorch in → PyTorch out, anything else → Numba device array."""
    mod = type(like).__module__.split(".")[0]
    if mod == "cupy":
        import cupy
        return cupy.asarray(result)
    if mod == "torch":
        import torch
        return torch.as_tensor(result, device=like.device)
    return result


def stat_dtype(dtype):
    """Statistics are float64 for float64 input, float32 otherwise."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _stream_handle(s):
    h = int(s) if s else 0
    return 0 if h == 1 else h     # CAI 1 = legacy default stream


def _launch_stream(x, *others):
    """The stream of ``x``; synchronizes operands that live on another stream."""
    if SIM:
        return 0
    stream = getattr(x, "stream", 0) or 0
    h = _stream_handle(stream)
    for a in others:
        if a is None:
            continue
        s = getattr(a, "stream", 0) or 0
        if _stream_handle(s) not in (0, h):
            s.synchronize()
    return stream


def _flat(a):
    """1-D contiguous view of ``a``'s memory from its lowest address."""
    strides = _layout.element_strides(a, "array")
    span, base = _layout.flat_extent(a.shape, strides)
    if SIM:
        from numpy.lib.stride_tricks import as_strided
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        h = a._ary
        if span == 0:
            return FakeCUDAArray(np.empty(0, h.dtype))
        lo = (h[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in h.strides)]
              if h.ndim else h.reshape(1))
        return FakeCUDAArray(as_strided(lo, shape=(span,), strides=(h.dtype.itemsize,)))
    if span == 0:
        return cuda.device_array(0, a.dtype)
    ptr0 = a.__cuda_array_interface__["data"][0]
    desc = {"shape": (span,), "strides": None, "typestr": a.dtype.str, "version": 3,
            "data": (ptr0 - base * a.dtype.itemsize, False), "stream": None}
    return cuda.from_cuda_array_interface(desc, owner=a, sync=False)


def empty_like(x, stream=0):
    """Output of ``x``'s shape and dtype, dense, in ``x``'s memory order."""
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(np.empty_like(x._ary, order="K"))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    order = sorted(range(x.ndim), key=lambda d: -abs(x.strides[d]))
    strides = [0] * x.ndim
    acc = x.dtype.itemsize
    for d in reversed(order):
        strides[d] = acc
        acc *= x.shape[d]
    buf = cuda.device_array(max(prod(x.shape), 1), x.dtype, stream=stream)
    return DeviceNDArray(shape=tuple(x.shape), strides=tuple(strides), dtype=x.dtype,
                         gpu_data=buf.gpu_data, stream=stream)


def astype(a, dtype, stream=None):
    """C-contiguous device copy of ``a`` converted to ``dtype`` (e.g. integer
    input of :func:`moments` → float64)."""
    stream = _launch_stream(a) if stream is None else stream
    out = cuda.device_array(prod(a.shape), dtype, stream=stream)
    if out.size:
        sizes, strides, base = _stat_layout(a)
        dsz, dst = _to_device(np.concatenate([sizes, strides]), stream, [len(sizes)] * 2)
        K.gather[_blocks(out.size), TPB, stream](_flat(a), base, dsz, dst.reshape(1, -1), out)
    return out.reshape(a.shape)


# ------------------------------------------------------------------ helpers
def _blocks(n):
    return max(1, -(-n // TPB))


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def _to_device(host, stream, lengths):
    """Copy one int64 array to the device once; return views of its pieces."""
    d = cuda.to_device(np.ascontiguousarray(host, dtype=np.int64), stream=stream)
    out, at = [], 0
    for n in lengths:
        out.append(d[at:at + n])
        at += n
    return out


def _strides(*arrays):
    return [list(_layout.element_strides(a, "array")) for a in arrays]


class _DevPlan:
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
        ks, ss, kst, rs, rst, bases = _to_device(host, stream,
                                                 [nk, nk, nops * nk, nr, nops * nr, nops])
        self.args = (ks, ss.reshape(1, nk), kst.reshape(nops, nk), rs,
                     rst.reshape(nops, nr), bases)
        self.n = plan.n
        self.n_stats = plan.n_stats
        self.inner_kept = plan.inner_kept
        if self.inner_kept:
            kin = int(plan.kept_sizes[-1])
            self.width = min(K.WARP, _next_pow2(kin))           # TX
            self.n_tiles = -(-kin // self.width)
            items = (plan.n_stats // kin) * self.n_tiles
            min_chunk = max(TPB // self.width, MIN_CHUNK // self.width)
            self.chunk, self.n_chunks = _split(plan.n, items * TPB, min_chunk)
            self.grid = items * self.n_chunks
        else:
            self.width = min(TPB, _next_pow2(-(-plan.n // PER_THREAD)))   # G
            self.n_tiles = 1
            chunk_threads = plan.n_stats * (TPB if self.width == TPB else 0)
            self.chunk, self.n_chunks = _split(plan.n, chunk_threads, MIN_CHUNK)
            self.grid = max(1, -(-(plan.n_stats * self.n_chunks) // (TPB // self.width)))

    def shape_args(self):
        """Trailing launch arguments of the element kernels."""
        return (self.n, self.n_stats, self.chunk, self.n_chunks, self.width, self.n_tiles)

    def kernel(self, acc, name):
        """Element kernel ``name`` for accumulator dtype ``acc`` and this mapping."""
        return K.ELEMENT[(np.dtype(acc), self.inner_kept)][name]


def _split(n, threads, min_chunk):
    """``(chunk, n_chunks)`` for a reduction of length ``n`` whose unsplit
    launch runs ``threads`` threads (0: splitting would not help)."""
    n_chunks = 1
    if 0 < threads < TARGET_THREADS:
        n_chunks = max(1, min(-(-TARGET_THREADS // threads), n // max(min_chunk, 1)))
    n_chunks = max(n_chunks, -(-n // MAX_CHUNK))
    chunk = max(1, -(-n // n_chunks))
    return chunk, max(1, -(-n // chunk))


def _stat_layout(a):
    """``(sizes, strides, base)`` of a per-statistic array for ``gather``."""
    shape = tuple(a.shape) or (1,)
    strides = _layout.element_strides(a, "array") if a.ndim else [0]
    _, base = _layout.flat_extent(a.shape, strides if a.ndim else ())
    return np.array(shape, np.int64), np.array(strides, np.int64), base


def _vector(a, stream):
    """A per-statistic array as a contiguous float64 device vector."""
    out = cuda.device_array(max(1, prod(a.shape)), np.float64, stream=stream)
    sizes, strides, base = _stat_layout(a)
    dsz, dst = _to_device(np.concatenate([sizes, strides]), stream, [len(sizes)] * 2)
    K.gather[_blocks(out.size), TPB, stream](_flat(a), base, dsz, dst.reshape(1, -1), out)
    return out


def _param(a, stream, dummy):
    """``(vector, present)`` for an optional per-statistic parameter."""
    return (dummy, False) if a is None else (_vector(a, stream), True)


def _acc(x):
    return stat_dtype(x.dtype)


def _welford(x, dp, p, stream, skipna=False):
    """Per-chunk partials of ``x − pivot`` (plan row ``p``; NaNs left out with
    ``skipna``) and the per-statistic pivots:
    ``(part_count, part_mean, part_m2, pivots)``."""
    acc = _acc(x)
    size = dp.n_chunks * dp.n_stats
    part_count, part_mean, part_m2 = (cuda.device_array(size, acc, stream=stream)
                                      for _ in range(3))
    pivots = cuda.device_array(dp.n_stats, np.float64, stream=stream)
    dp.kernel(acc, "welford")[dp.grid, TPB, stream](_flat(x), *dp.args, p, bool(skipna), *dp.shape_args(),
                               part_count, part_mean, part_m2, pivots)
    return part_count, part_mean, part_m2, pivots


def _finalize(x, dp, partials, inv_dof, stream, training=False, eps=0.0, w=None, b=None,
              acc=None, rms=False):
    """Merge the partials: ``(mean, var = M2·inv_dof, invstd, centre, α, β)`` in
    ``acc`` (the accumulator type unless given; float64 for states); ``rms``:
    ``var`` is ``mean(x²)`` and the centre 0 (see ``per_stat.finalize_welford``)."""
    acc = acc or _acc(x)
    m = dp.n_stats
    mean, var = (cuda.device_array(m, acc, stream=stream) for _ in range(2))
    dummy = cuda.device_array(1, np.float64, stream=stream)
    if training:
        invstd, alpha, beta = (cuda.device_array(m, acc, stream=stream) for _ in range(3))
        centre = cuda.device_array(2 * m, np.float64, stream=stream)
    else:
        invstd = alpha = beta = cuda.device_array(1, acc, stream=stream)
        centre = dummy
    wv, hw = _param(w, stream, dummy)
    bv, hb = _param(b, stream, dummy)
    K.finalize_welford[_blocks(m), TPB, stream](*partials, dp.n_chunks, m, float(inv_dof),
                                                bool(training), bool(rms), float(eps), wv, hw,
                                                bv, hb,
                                                mean, var, invstd, centre, alpha, beta)
    return mean, var, invstd, centre.reshape(2, -1) if training else centre, alpha, beta


def _affine(out, dp, rows, u, cu, ca, v, cv, cb, cc, stream, w=None, b=None):
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
    dp.kernel(_acc(u), "affine")[dp.grid, TPB, stream](
        fo, fu, fu if v is None else _flat(v), vec if w is None else w, vec if b is None else b,
        *dp.args, *rows, cu is not None, dummy if cu is None else cu, ca, v is not None,
        dummy if v is None else cv, ca if v is None else cb, cc, w is not None,
        *dp.shape_args())


def _dual_sums(dy, x, dp, rows, w, mu, inv, stream):
    """Per-chunk partials ``(Σg, Σg·(x − mu)[·inv])`` with ``g = dy·w``: ``w``
    (None: 1) read per element by plan row ``rows[2]``, ``mu``/``inv`` (None:
    unscaled) by row ``rows[3]``; rows of ``dy`` and ``x`` first."""
    acc = _acc(x)
    p1, p2 = (cuda.device_array(dp.n_chunks * dp.n_stats, acc, stream=stream) for _ in range(2))
    dummy = cuda.device_array(1, np.float64, stream=stream)
    dp.kernel(acc, "dual_sums")[dp.grid, TPB, stream](
        _flat(dy), _flat(x), dummy if w is None else w, mu, dummy if inv is None else inv,
        *dp.args, *rows, w is not None, inv is not None, *dp.shape_args(), p1, p2)
    return p1, p2


def _bind(a, stream):
    return a if SIM or not stream else a.bind(stream)


def _stat_out(a, shape, stream):
    return _bind(a.reshape(shape), stream)


# ---------------------------------------------------------------- operations
def moments(x, axis, ddof):
    """``(mean, var)`` with ``var = M2/(n − ddof)``, statistic-shaped, in
    :func:`stat_dtype`; NaN for empty reductions (``M2/0`` as NumPy)."""
    stream = _launch_stream(x)
    shape = _layout.stat_shape(x.shape, axis)
    m = prod(shape)
    n = prod(x.shape[d] for d in axis)
    if n == 0 or m == 0:
        host = np.full(max(m, 1), np.nan, stat_dtype(x.dtype))[:m]
        mean = cuda.to_device(host, stream=stream)
        var = cuda.to_device(host.copy(), stream=stream)
        return _stat_out(mean, shape, stream), _stat_out(var, shape, stream)
    dp = _DevPlan(x.shape, axis, _strides(x), stream)
    dof = n - ddof
    inv_dof = 1.0 / dof if dof > 0 else np.inf
    mean, var, *_ = _finalize(x, dp, _welford(x, dp, 0, stream), inv_dof, stream)
    return _stat_out(mean, shape, stream), _stat_out(var, shape, stream)


def moment_state(x, axis, skipna):
    """``(count, mean, m2, mean_lo)``: int64 and float64 device vectors of the
    statistic shape (see :class:`nbnorm.Moments`); with ``skipna`` the counts
    are of the non-NaN values (a statistic with none: mean NaN, m2 0)."""
    stream = _launch_stream(x)
    shape = _layout.stat_shape(x.shape, axis)
    m = prod(shape)
    n = prod(x.shape[d] for d in axis)
    count = cuda.to_device(np.full(m, n if m else 0, np.int64), stream=stream)
    lo = cuda.to_device(np.zeros(m), stream=stream)
    if n == 0 or m == 0:
        mean = cuda.to_device(np.full(m, np.nan), stream=stream)
        m2 = cuda.to_device(np.zeros(m), stream=stream)
    else:
        dp = _DevPlan(x.shape, axis, _strides(x), stream)
        partials = _welford(x, dp, 0, stream, skipna)
        # training=True for the (pivot, relative mean) centre; the invstd it
        # also computes is unused (eps=1 keeps it finite for the simulator)
        mean, m2, _, centre, _, _ = _finalize(x, dp, partials, 1.0, stream, training=True,
                                              eps=1.0, acc=np.float64)
        if skipna:
            S.launch(S.count_partials, m, partials[0], dp.n_chunks, count, centre[1])
        S.launch(S.split_mean, m, centre[0], centre[1], mean, lo)
    return tuple(_stat_out(a, shape, stream) for a in (count, mean, m2, lo))


def to_host(a):
    """A device array's contents as a NumPy array (pickling states)."""
    return a.copy_to_host()


def from_host(a):
    return to_device_like(np.asarray(a))


def merge_states(a, b):
    """Two device ``(count, mean, m2, mean_lo)`` states merged by Chan's
    formula with compensated means (new arrays)."""
    shape = tuple(a[1].shape)
    flat = [v.reshape(-1) if v.ndim != 1 else v for v in (*a, *b)]
    m = flat[0].size
    out = (cuda.device_array(m, np.int64), cuda.device_array(m), cuda.device_array(m),
           cuda.device_array(m))
    S.launch(S.merge_states, m, *flat, *out)
    return tuple(v.reshape(shape) for v in out)


def state_variance(count, m2, ddof):
    """``(m2/(count − ddof), whether any count − ddof ≤ 0)``: one flag is read
    back to the host (a synchronization) for the warning."""
    shape = tuple(m2.shape)
    var = cuda.device_array(m2.size)
    short = cuda.to_device(np.zeros(1, np.int32))
    S.launch(S.state_variance, m2.size, count.reshape(-1), m2.reshape(-1), float(ddof), var, short)
    return var.reshape(shape), bool(short.copy_to_host()[0])


def sqrt(a):
    out = cuda.device_array(a.size)
    S.launch(S.sqrt_into, a.size, a.reshape(-1), out)
    return out.reshape(a.shape)


def forward(x, weight, bias, axis, eps, out):
    """Training forward: ``(y, mean, biased var, invstd)``; ``y = (x − mean)·α + bias``
    with ``α = weight·invstd``, ``x − mean`` as ``(x − pivot) − relative mean``."""
    stream = _launch_stream(x, weight, bias, out)
    y = empty_like(x, stream) if out is None else out
    shape = _layout.stat_shape(x.shape, axis)
    dp = _DevPlan(x.shape, axis, _strides(x, y), stream)
    mean, var, invstd, centre, alpha, beta = _finalize(
        x, dp, _welford(x, dp, 0, stream), 1.0 / dp.n, stream, training=True, eps=eps,
        w=weight, b=bias)
    _affine(y, dp, (1, 0, 0, 0), x, centre, alpha, None, None, None, beta, stream)
    return (y, _stat_out(mean, shape, stream), _stat_out(var, shape, stream),
            _stat_out(invstd, shape, stream))


def inference(x, mean, var, weight, bias, axis, eps, out):
    """``y = (x − mean)/√(var + eps)·weight + bias`` as ``(x − mean)·α + bias``
    per element, with the mean in float64."""
    stream = _launch_stream(x, mean, var, weight, bias, out)
    y = empty_like(x, stream) if out is None else out
    if x.size == 0:
        return y
    dp = _DevPlan(x.shape, axis, _strides(x, y), stream)
    acc = _acc(x)
    m = dp.n_stats
    dummy = cuda.device_array(1, np.float64, stream=stream)
    wv, hw = _param(weight, stream, dummy)
    bv, hb = _param(bias, stream, dummy)
    alpha, beta = (cuda.device_array(m, acc, stream=stream) for _ in range(2))
    K.inference_coefficients[_blocks(m), TPB, stream](
        _vector(var, stream), wv, hw, bv, hb, float(eps), alpha, beta)
    _affine(y, dp, (1, 0, 0, 0), x, _vector(mean, stream).reshape(1, -1), alpha, None, None,
            None, beta, stream)
    return y


def backward(dy, x, mean, invstd, weight, axis, training, out):
    """``(dx, dweight, dbias)``: one reduction pass for ``(Σdy, Σdy·(x − mean))``,
    then ``dx = dy·a + (x − mean)·b + c`` (``_welford.backward_coefficients``); with
    frozen statistics ``dx = dy·a + c`` and the element pass does not read ``x``."""
    stream = _launch_stream(x, dy, mean, invstd, weight, out)
    dx = empty_like(x, stream) if out is None else out
    shape = _layout.stat_shape(x.shape, axis)
    dp = _DevPlan(x.shape, axis,
                  _strides(dy, x, dx) + [_layout.statistic_strides(x.shape, axis)], stream)
    acc = _acc(x)
    m = dp.n_stats
    mu = _vector(mean, stream)
    inv = _vector(invstd, stream)
    dummy = cuda.device_array(1, np.float64, stream=stream)
    wv, hw = _param(weight, stream, dummy)
    p1, p2 = _dual_sums(dy, x, dp, (0, 1, 3, 3), None, mu, None, stream)
    dweight, dbias, ca, cb, cc = (cuda.device_array(m, acc, stream=stream) for _ in range(5))
    K.finalize_sums[_blocks(m), TPB, stream](p1, p2, dp.n_chunks, m, dp.n, inv, wv, hw,
                                             bool(training), False, dweight, dbias, ca, cb, cc)
    if training:
        _affine(dx, dp, (2, 0, 1, 0), dy, None, ca, x, mu.reshape(1, -1), cb, cc, stream)
    else:
        _affine(dx, dp, (2, 0, 1, 0), dy, None, ca, None, None, None, cc, stream)
    return dx, _stat_out(dweight, shape, stream), _stat_out(dbias, shape, stream)


def update_running(running, batch, momentum, scale):
    """``running ← (1 − momentum)·running + momentum·scale·batch`` in place on
    the device where ``batch`` is finite; returns how many were skipped."""
    stream = _launch_stream(running, batch)
    m = prod(running.shape)
    if m == 0:
        return 0
    skipped = cuda.to_device(np.zeros(1, np.int64), stream=stream)
    sizes, strides, base = _stat_layout(running)
    dsz, dst = _to_device(np.concatenate([sizes, strides]), stream, [len(sizes)] * 2)
    K.update_running[_blocks(m), TPB, stream](_flat(running), base, dsz, dst.reshape(1, -1),
                                              _flat(batch), float(momentum), float(scale),
                                              skipped)
    return int(skipped.copy_to_host(stream=stream)[0])


from .family import norm_backward, norm_forward  # noqa: E402,F401  (the family's operations)
