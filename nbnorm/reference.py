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
