"""Slow, obviously-correct float64 NumPy references for every public function.

Same signatures and semantics as the fast functions (NumPy arrays only); they
compute in float64 with NumPy's two-pass ``mean``/``var`` and return float64.
The test suite and ``python -m nbnorm`` check the kernels against them.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._layout import normalize_axis, stat_shape


def _keep(x, axis):
    """Shape that broadcasts a statistic against ``x``."""
    return tuple(1 if d in axis else s for d, s in enumerate(x.shape))


def _param(a, axis, x, fill):
    if a is None:
        return np.full(_keep(x, axis), fill)
    return np.asarray(a, dtype=np.float64).reshape(_keep(x, axis))


def _mean(x, ax):
    """``np.mean`` plus the mean of the residuals: NumPy sums a strided axis
    term by term, so with a large offset the plain mean is off by up to
    ``n·eps·|x|``; the correction brings it to ``eps·|mean|``."""
    m = np.mean(x, axis=ax, keepdims=True)
    correction = np.mean(x - m, axis=ax, keepdims=True)
    return np.where(np.isfinite(m), m + correction, m)   # inf − inf would turn ±inf into NaN


def moment_state(x, axis=None, *, skipna=False):
    """``(count, mean, m2)`` of :class:`nbnorm.Moments` in float64 (count
    int64): with ``skipna`` of the non-NaN values (``np.nanmean`` and the
    two-pass ``Σ(x − mean)²`` about it; mean NaN where none is left)."""
    x = np.asarray(x, dtype=np.float64)
    ax = normalize_axis(axis, x.ndim)
    if not skipna:
        count = np.full(stat_shape(x.shape, ax), int(np.prod([x.shape[d] for d in ax])),
                        np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = _mean(x, ax)
            m2 = np.sum((x - mean) ** 2, axis=ax)
        return count, mean.squeeze(ax), m2
    valid = ~np.isnan(x)
    count = valid.sum(axis=ax)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=ax, keepdims=True)
        mean = np.where(np.isfinite(mean), mean + np.nanmean(x - mean, axis=ax, keepdims=True),
                        mean)
        m2 = np.nansum((x - mean) ** 2, axis=ax)
    return count, mean.squeeze(ax), np.where(count > 0, m2, 0.0)


def moments(x, axis=None, *, ddof=0, keepdims=False, skipna=False):
    """``(mean, var)`` in float64: corrected mean, two-pass ``Σ(x − mean)²/(n − ddof)``
    (with ``skipna``, of the non-NaN values, ``n`` counted per statistic)."""
    x = np.asarray(x, dtype=np.float64)
    ax = normalize_axis(axis, x.ndim)
    count, mean, m2 = moment_state(x, ax, skipna=skipna)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m2 / np.maximum(count - ddof, 0)
    if keepdims:
        kshape = tuple(1 if d in ax else s for d, s in enumerate(x.shape))
        mean, var = mean.reshape(kshape), var.reshape(kshape)
    return mean, var


def batch_norm_forward(x, weight=None, bias=None, *, axis, eps=1e-5, running_mean=None,
                       running_var=None, momentum=0.1):
    """``(y, mean, invstd)`` in float64; running statistics updated in place."""
    x = np.asarray(x, dtype=np.float64)
    ax = normalize_axis(axis, x.ndim)
    mean, var = moments(x, ax)
    invstd = 1.0 / np.sqrt(var + eps)
    k = _keep(x, ax)
    y = (x - mean.reshape(k)) * invstd.reshape(k) * _param(weight, ax, x, 1.0) + _param(bias, ax, x, 0.0)
    if running_mean is not None:
        n = x.size // max(mean.size, 1)
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        running_var[...] = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    return y, mean, invstd


def batch_norm_inference(x, mean, var, weight=None, bias=None, *, axis, eps=1e-5):
    """``(x − mean)/√(var + eps)·weight + bias`` in float64."""
    x = np.asarray(x, dtype=np.float64)
    ax = normalize_axis(axis, x.ndim)
    return ((x - _param(mean, ax, x, 0.0)) / np.sqrt(_param(var, ax, x, 1.0) + eps)
            * _param(weight, ax, x, 1.0) + _param(bias, ax, x, 0.0))


def batch_norm_backward(dy, x, mean, invstd, weight=None, *, axis, training=True):
    """``(dx, dweight, dbias)`` in float64, written out term by term."""
    dy = np.asarray(dy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    ax = normalize_axis(axis, x.ndim)
    k = _keep(x, ax)
    mu = np.asarray(mean, dtype=np.float64).reshape(k)
    inv = np.asarray(invstd, dtype=np.float64).reshape(k)
    w = _param(weight, ax, x, 1.0)
    xhat = (x - mu) * inv
    dbias = dy.sum(axis=ax)
    dweight = (dy * xhat).sum(axis=ax)
    if training:
        n = x.size // max(dbias.size, 1)
        dx = w * inv / n * (n * dy - dbias.reshape(k) - xhat * dweight.reshape(k))
    else:
        dx = dy * w * inv
    return dx, dweight, dbias


# ------------------------------------------------- the normalization family
def _normalized_param(a, ax, x, fill):
    """A layer/RMS-norm parameter (shape of the ``ax`` dims) broadcast against ``x``."""
    shape = tuple(s if d in ax else 1 for d, s in enumerate(x.shape))
    return np.full(shape, fill) if a is None else np.asarray(a, np.float64).reshape(shape)


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    """``(y, mean, invstd)`` in float64; statistics over ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    ax = normalize_axis(axis, x.ndim)
    mean = _mean(x, ax)
    var = np.mean((x - mean) ** 2, axis=ax, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    y = (x - mean) * inv * _normalized_param(weight, ax, x, 1.0) + _normalized_param(bias, ax, x, 0.0)
    return y, mean.reshape(stat_shape(x.shape, ax)), inv.reshape(stat_shape(x.shape, ax))


def layer_norm_backward(dy, x, mean, invstd, weight=None, *, axis=-1):
    """``(dx, dweight, dbias)`` in float64, term by term."""
    dy, x = np.asarray(dy, np.float64), np.asarray(x, np.float64)
    ax = normalize_axis(axis, x.ndim)
    k = _keep(x, ax)
    xhat = (x - np.asarray(mean, np.float64).reshape(k)) * np.asarray(invstd, np.float64).reshape(k)
    g = dy * _normalized_param(weight, ax, x, 1.0)
    n = x.size // max(np.prod(stat_shape(x.shape, ax), dtype=int), 1)
    dx = (np.asarray(invstd, np.float64).reshape(k) / n
          * (n * g - g.sum(axis=ax, keepdims=True) - xhat * (g * xhat).sum(axis=ax, keepdims=True)))
    other = tuple(d for d in range(x.ndim) if d not in ax)
    pshape = tuple(x.shape[a] for a in ax)
    return dx, (dy * xhat).sum(axis=other).reshape(pshape), dy.sum(axis=other).reshape(pshape)


def _grouped(a, channel_axis, groups):
    """``a`` with channels at axis 1, as ``(N, G, C/G, rest)``, and the
    channels-at-1 shape."""
    m = np.moveaxis(np.asarray(a, np.float64), channel_axis, 1)
    return m.reshape(m.shape[0], groups, m.shape[1] // groups, -1), m.shape


def _channel_param(a, shape, fill):
    """A per-channel parameter broadcast against a channels-at-1 array of ``shape``."""
    b = np.full(shape[1], fill) if a is None else np.asarray(a, np.float64)
    return b.reshape((1, shape[1]) + (1,) * (len(shape) - 2))


def group_norm(x, num_groups, weight=None, bias=None, *, channel_axis=1, eps=1e-5):
    """``(y, mean, invstd)`` in float64; statistics ``(N, G)``."""
    xg, mshape = _grouped(x, channel_axis, num_groups)
    mean = _mean(xg, (2, 3))
    var = np.mean((xg - mean) ** 2, axis=(2, 3), keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    y = ((xg - mean) * inv).reshape(mshape)
    y = y * _channel_param(weight, mshape, 1.0) + _channel_param(bias, mshape, 0.0)
    return np.moveaxis(y, 1, channel_axis), mean[:, :, 0, 0], inv[:, :, 0, 0]


def group_norm_backward(dy, x, mean, invstd, num_groups, weight=None, *, channel_axis=1):
    """``(dx, dweight, dbias)`` in float64, term by term."""
    xg, mshape = _grouped(x, channel_axis, num_groups)
    dyg, _ = _grouped(dy, channel_axis, num_groups)
    inv = np.asarray(invstd, np.float64)[:, :, None, None]
    xhat = (xg - np.asarray(mean, np.float64)[:, :, None, None]) * inv
    g = (dyg.reshape(mshape) * _channel_param(weight, mshape, 1.0)).reshape(xg.shape)
    n = xg.shape[2] * xg.shape[3]
    dx = inv / n * (n * g - g.sum(axis=(2, 3), keepdims=True)
                    - xhat * (g * xhat).sum(axis=(2, 3), keepdims=True))
    per_channel = (0,) + tuple(range(2, len(mshape)))
    dweight = (dyg * xhat).reshape(mshape).sum(axis=per_channel)
    dbias = dyg.reshape(mshape).sum(axis=per_channel)
    return np.moveaxis(dx.reshape(mshape), 1, channel_axis), dweight, dbias


def instance_norm(x, weight=None, bias=None, *, channel_axis=1, eps=1e-5, running_mean=None,
                  running_var=None, momentum=0.1):
    """``(y, mean, invstd)`` in float64 (``(N, C)`` statistics); running
    statistics updated in place with the batch averages of the instances'
    means and unbiased variances."""
    x = np.asarray(x, np.float64)
    c = channel_axis % x.ndim
    y, mean, inv = group_norm(x, x.shape[c], weight, bias, channel_axis=c, eps=eps)
    if running_mean is not None:
        n = x.size // (x.shape[0] * x.shape[c])
        xg, _ = _grouped(x, c, x.shape[c])
        var = np.var(xg, axis=(2, 3)) * n / (n - 1)
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean.mean(axis=0)
        running_var[...] = (1 - momentum) * running_var + momentum * var.mean(axis=0)
    return y, mean, inv


def instance_norm_backward(dy, x, mean, invstd, weight=None, *, channel_axis=1):
    c = channel_axis % np.ndim(x)
    return group_norm_backward(dy, x, mean, invstd, np.shape(x)[c], weight, channel_axis=c)


def rms_norm(x, weight=None, *, axis=-1, eps=None):
    """``(y, rstd)`` in float64: ``rstd = 1/√(mean(x²) + eps)``, ``y = x·rstd·weight``."""
    if eps is None:
        eps = float(np.finfo(np.asarray(x).dtype).eps)
    x = np.asarray(x, np.float64)
    ax = normalize_axis(axis, x.ndim)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=ax, keepdims=True) + eps)
    return x * rstd * _normalized_param(weight, ax, x, 1.0), rstd.reshape(stat_shape(x.shape, ax))


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1):
    """``(dx, dweight)`` in float64: ``dx = r·g − (r³/N)·x·Σ(g·x)``, ``g = weight·dy``."""
    dy, x = np.asarray(dy, np.float64), np.asarray(x, np.float64)
    ax = normalize_axis(axis, x.ndim)
    r = np.asarray(rstd, np.float64).reshape(_keep(x, ax))
    g = dy * _normalized_param(weight, ax, x, 1.0)
    n = int(np.prod([x.shape[a] for a in ax]))
    dx = r * g - r ** 3 / n * x * (g * x).sum(axis=ax, keepdims=True)
    other = tuple(d for d in range(x.ndim) if d not in ax)
    return dx, (dy * x * r).sum(axis=other).reshape(tuple(x.shape[a] for a in ax))
