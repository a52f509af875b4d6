"""CUDA operations of the normalization family (layer, group, instance and
RMS norm) on a :class:`~nbnorm._geometry.Geometry`: batch norm's element
kernels over the geometry's view, with the affine parameters (and, for the
parameter gradients, the statistics) read per element as plan operands.

Forward: ``welford`` over the view → ``finalize_welford`` (``rms``: ``c = 0``,
``var = mean(x²)``) → ``affine``: ``y = ((x − c)·invstd)·w + b``.

Backward, with ``g = dy·w`` and sums over a statistic's ``n`` values:
``dual_sums`` → ``(Σg, Σg·(x − c))`` per statistic and ``finalize_sums`` →
``(a, b, c')``; ``dual_sums`` over the *parameter* plan (the axes the
parameters vary along kept, the others reduced) with ``c``/``invstd`` read
per element → ``dbias = Σdy``, ``dweight = Σdy·(x − c)·invstd``; then
``affine``: ``dx = (dy·a)·w + (x − c)·b + c'``.  The gradients are reduced
before ``dx`` is written, so ``out`` may be ``dy`` or ``x``.
"""
from __future__ import annotations

from numba import cuda

from .. import _layout
from . import kernels as K
from .arrays import _launch_stream, _stat_out, empty_like
from .device import TPB
from .launch import (
    DevPlan,
    acc_dtype,
    affine,
    blocks,
    dual_sums,
    filled,
    finalize,
    vector,
    welford,
)


def _view_strides(geo, *arrays):
    return [list(geo.view_strides(_layout.element_strides(a, "array"))) for a in arrays]


def norm_forward(x, geo, weight, bias, eps, rms, out):
    """``(y, c, var, invstd)``: ``c`` the mean, ``var`` the biased variance
    (``mean(x²)`` for RMS), statistics of ``geo.stat_shape`` in the
    accumulator type."""
    stream = _launch_stream(x, weight, bias, out)
    y = empty_like(x, stream) if out is None else out
    dp = DevPlan(geo.view_shape, geo.axis,
                  _view_strides(geo, x, y) + [list(geo.param_strides)], stream)
    mean, var, inv, centre, alpha, beta = finalize(
        x, dp, welford(x, dp, 0, stream), 1.0 / dp.n, stream, training=True, eps=eps, rms=rms)
    w = b = None
    if weight is not None or bias is not None:
        w = filled(geo.n_params, 1.0) if weight is None else vector(weight, stream)
        b = filled(geo.n_params, 0.0) if bias is None else vector(bias, stream)
    affine(y, dp, (1, 0, 0, 2), x, centre, alpha, None, None, None, beta, stream, w, b)
    shape = geo.stat_shape
    return (y, _stat_out(mean, shape, stream), _stat_out(var, shape, stream),
            _stat_out(inv, shape, stream))


def norm_backward(dy, x, centre, invstd, geo, weight, rms, out):
    """``(dx, dweight, dbias)``; the gradients of ``geo.param_shape`` in the
    accumulator type."""
    stream = _launch_stream(x, dy, centre, invstd, weight, out)
    dx = empty_like(x, stream) if out is None else out
    acc = acc_dtype(x)
    stat_row = _layout.statistic_strides(geo.view_shape, geo.axis)
    dp = DevPlan(geo.view_shape, geo.axis,
                  _view_strides(geo, dy, x, dx) + [list(geo.param_strides), stat_row], stream)
    m = dp.n_stats
    mu = filled(m, 0.0) if centre is None else vector(centre, stream)
    inv = vector(invstd, stream)
    w = None if weight is None else vector(weight, stream)

    # parameter gradients: statistics read per element over the parameter plan
    free = tuple(d for d, st in enumerate(geo.param_strides) if st == 0)
    pp = DevPlan(geo.view_shape, free, _view_strides(geo, dy, x) + [stat_row], stream)
    q1, q2 = dual_sums(dy, x, pp, (0, 1, 2, 2), None, mu, inv, stream)
    dweight, dbias = (cuda.device_array(pp.n_stats, acc, stream=stream) for _ in range(2))
    K.sum_partials[blocks(pp.n_stats), TPB, stream](q1, q2, pp.n_chunks, pp.n_stats, dweight,
                                                     dbias)

    p1, p2 = dual_sums(dy, x, dp, (0, 1, 3, 4), w, mu, None, stream)
    ca, cb, cc, unused_w, unused_b = (cuda.device_array(m, acc, stream=stream) for _ in range(5))
    K.finalize_sums[blocks(m), TPB, stream](p1, p2, dp.n_chunks, m, dp.n, inv, mu, False, True,
                                             bool(rms), unused_w, unused_b, ca, cb, cc)
    zeros = None if w is None else filled(geo.n_params, 0.0)
    affine(dx, dp, (2, 0, 1, 3), dy, None, ca, x, mu.reshape(1, -1), cb, cc, stream, w, zeros)
    shape = geo.param_shape
    return dx, _stat_out(dweight, shape, stream), _stat_out(dbias, shape, stream)
