"""CUDA backend: device arrays in and out, Numba CUDA kernels in between.

The operations of the backend contract (:mod:`nbnorm._contract`): each
builds the :class:`~nbnorm._layout.Plan` of its operands (:mod:`.launch`),
launches the kernels of :mod:`nbnorm._cuda.kernels` on the stream of ``x``
(:mod:`.arrays`) and returns device arrays, which the router hands back as
the caller's type (``wrap``).  The family's operations are in :mod:`.family`.
"""
from __future__ import annotations

from math import prod

import numpy as np
from numba import cuda

from .. import _layout, _welford
from . import kernels as K
from . import states as S
from .arrays import (
    _flat,
    _launch_stream,
    _stat_out,
    asarray,
    empty_like,
    stat_dtype,
    target,
    to_device_like,
    wrap,
)
from .launch import (
    DevPlan,
    acc_dtype,
    affine,
    blocks,
    dual_sums,
    finalize,
    param,
    stat_layout,
    strides_of,
    to_device_ints,
    vector,
    welford,
)

name = "cuda"
remembers_calls = False     # see nbnorm._contract.Backend
wrap_reads_like = True
array_module = "nbnorm._cuda.array_module"
SIM = K.SIM
TPB = K.TPB

__all__ = ["asarray", "target", "wrap", "stat_dtype", "empty_like", "to_device_like", "astype",
           "moments", "moment_state", "to_host", "from_host", "merge_states", "state_variance",
           "sqrt", "forward", "inference", "backward", "backward_sums", "backward_apply",
           "update_running", "norm_forward", "norm_backward"]


def astype(a, dtype, stream=None):
    """C-contiguous device copy of ``a`` converted to ``dtype`` (e.g. integer
    input of :func:`moments` → float64)."""
    stream = _launch_stream(a) if stream is None else stream
    out = cuda.device_array(prod(a.shape), dtype, stream=stream)
    if out.size:
        sizes, strides, base = stat_layout(a)
        dsz, dst = to_device_ints(np.concatenate([sizes, strides]), stream, [len(sizes)] * 2)
        K.gather[blocks(out.size), TPB, stream](_flat(a), base, dsz, dst.reshape(1, -1), out)
    return out.reshape(a.shape)




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
    dp = DevPlan(x.shape, axis, strides_of(x), stream)
    dof = n - ddof
    inv_dof = 1.0 / dof if dof > 0 else np.inf
    mean, var, *_ = finalize(x, dp, welford(x, dp, 0, stream), inv_dof, stream)
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
        dp = DevPlan(x.shape, axis, strides_of(x), stream)
        partials = welford(x, dp, 0, stream, skipna)
        # training=True for the (pivot, relative mean) centre; the invstd it
        # also computes is unused (eps=1 keeps it finite for the simulator)
        mean, m2, _, centre, _, _ = finalize(x, dp, partials, 1.0, stream, training=True,
                                              eps=1.0, acc=np.float64, skipna=skipna,
                                              keep_centre=True)
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
    dp = DevPlan(x.shape, axis, strides_of(x, y), stream)
    mean, var, invstd, centre, alpha, beta = finalize(
        x, dp, welford(x, dp, 0, stream), 1.0 / dp.n, stream, training=True, eps=eps,
        w=weight, b=bias)
    affine(y, dp, (1, 0, 0, 0), x, centre, alpha, None, None, None, beta, stream)
    return (y, _stat_out(mean, shape, stream), _stat_out(var, shape, stream),
            _stat_out(invstd, shape, stream))


def inference(x, mean, var, weight, bias, axis, eps, out):
    """``y = (x − mean)/√(var + eps)·weight + bias`` as ``(x − mean)·α + bias``
    per element, with the mean in float64."""
    stream = _launch_stream(x, mean, var, weight, bias, out)
    y = empty_like(x, stream) if out is None else out
    if x.size == 0:
        return y
    dp = DevPlan(x.shape, axis, strides_of(x, y), stream)
    acc = acc_dtype(x)
    m = dp.n_stats
    dummy = cuda.device_array(1, np.float64, stream=stream)
    wv, hw = param(weight, stream, dummy)
    bv, hb = param(bias, stream, dummy)
    alpha, beta = (cuda.device_array(m, acc, stream=stream) for _ in range(2))
    K.inference_coefficients[blocks(m), TPB, stream](
        vector(var, stream), wv, hw, bv, hb, float(eps), alpha, beta)
    affine(y, dp, (1, 0, 0, 0), x, vector(mean, stream).reshape(1, -1), alpha, None, None,
            None, beta, stream)
    return y


def backward(dy, x, mean, invstd, weight, axis, training, out):
    """``(dx, dweight, dbias)``: one reduction pass for ``(Σdy, Σdy·(x − mean))``,
    then ``dx = dy·a + (x − mean)·b + c`` (``welford.backward_coefficients``); with
    frozen statistics ``dx = dy·a + c`` and the element pass does not read ``x``."""
    stream = _launch_stream(x, dy, mean, invstd, weight, out)
    dx = empty_like(x, stream) if out is None else out
    shape = _layout.stat_shape(x.shape, axis)
    dp = DevPlan(x.shape, axis,
                  strides_of(dy, x, dx) + [_layout.statistic_strides(x.shape, axis)], stream)
    acc = acc_dtype(x)
    m = dp.n_stats
    mu = vector(mean, stream)
    inv = vector(invstd, stream)
    dummy = cuda.device_array(1, np.float64, stream=stream)
    wv, hw = param(weight, stream, dummy)
    p1, p2 = dual_sums(dy, x, dp, (0, 1, 3, 3), None, mu, None, stream)
    dweight, dbias, ca, cb, cc = (cuda.device_array(m, acc, stream=stream) for _ in range(5))
    K.finalize_sums[blocks(m), TPB, stream](p1, p2, dp.n_chunks, m, dp.n, inv, wv, hw,
                                             bool(training), False, dweight, dbias, ca, cb, cc)
    if training:
        affine(dx, dp, (2, 0, 1, 0), dy, None, ca, x, mu.reshape(1, -1), cb, cc, stream)
    else:
        affine(dx, dp, (2, 0, 1, 0), dy, None, ca, None, None, None, cc, stream)
    return dx, _stat_out(dweight, shape, stream), _stat_out(dbias, shape, stream)


def _on_device(a, stream):
    """A per-statistic argument of a Dask chunk task on the device (the
    chunks of a statistic built from a NumPy array are host arrays)."""
    return cuda.to_device(np.ascontiguousarray(a), stream=stream) if isinstance(a, np.ndarray) else a


def _on_host(a):
    return np.asarray(a) if isinstance(a, np.ndarray) else np.asarray(cuda.as_cuda_array(a)
                                                                      .copy_to_host())


def backward_sums(dy, x, mean, axis):
    """The backward's reduction alone (for Dask's chunks): host float64
    ``(Σdy, Σdy·(x − mean))`` per statistic, added over the chunks in float64
    on the device and stored in the accumulator type there (one small copy
    to the host, which waits for the stream)."""
    stream = _launch_stream(x, dy)
    shape = _layout.stat_shape(x.shape, axis)
    m = prod(shape)
    if m == 0 or x.size == 0:
        return np.zeros(shape), np.zeros(shape)
    dp = DevPlan(x.shape, axis, strides_of(dy, x) + [_layout.statistic_strides(x.shape, axis)],
                 stream)
    p1, p2 = dual_sums(dy, x, dp, (0, 1, 2, 2), None, vector(_on_device(mean, stream), stream),
                       None, stream)
    s1, s2 = (cuda.device_array(m, acc_dtype(x), stream=stream) for _ in range(2))
    K.sum_partials[blocks(m), TPB, stream](p1, p2, dp.n_chunks, m, s2, s1)
    return tuple(v.copy_to_host(stream=stream).astype(np.float64).reshape(shape) for v in (s1, s2))


def backward_apply(dy, x, mean, invstd, weight, s1, s2, n, axis, training):
    """The backward's elementwise pass alone (for Dask's chunks):
    ``dx = dy·a + (x − mean)·b + c`` with the coefficients of
    :func:`nbnorm._welford.backward_coefficients` from host sums over all
    ``n`` values of each statistic (a number or statistic-shaped counts)."""
    stream = _launch_stream(dy, *(() if x is None else (x,)))
    dx = empty_like(dy, stream)
    shape = _layout.stat_shape(dy.shape, axis)
    m = prod(shape)
    if dy.size == 0:
        return dx
    a, b, c = _welford.host_backward_coefficients(
        m, n, _on_host(invstd), None if weight is None else _on_host(weight), s1, s2, training)
    ca, cb, cc = (cuda.to_device(v.astype(acc_dtype(dy)), stream=stream) for v in (a, b, c))
    src = x if training else dy
    dp = DevPlan(dy.shape, axis, strides_of(dy, src, dx) + [_layout.statistic_strides(dy.shape,
                                                                                      axis)],
                 stream)
    if training:
        mu = vector(_on_device(mean, stream), stream)
        affine(dx, dp, (2, 0, 1, 0), dy, None, ca, x, mu.reshape(1, -1), cb, cc, stream)
    else:
        affine(dx, dp, (2, 0, 1, 0), dy, None, ca, None, None, None, cc, stream)
    return dx


def update_running(running, batch, momentum, scale):
    """``running ← (1 − momentum)·running + momentum·scale·batch`` in place on
    the device where ``batch`` is finite (elsewhere unchanged).  Returns 0:
    how many were skipped is not read back, since that would wait for the
    GPU — the CUDA path does not warn about non-finite batch statistics."""
    stream = _launch_stream(running, batch)
    m = prod(running.shape)
    if m == 0:
        return 0
    sizes, strides, base = stat_layout(running)
    dsz, dst = to_device_ints(np.concatenate([sizes, strides]), stream, [len(sizes)] * 2)
    K.update_running[blocks(m), TPB, stream](_flat(running), base, dsz, dst.reshape(1, -1),
                                              _flat(batch), float(momentum), float(scale))
    return 0


from .family import norm_backward, norm_forward  # noqa: E402,F401  (the family's operations)
