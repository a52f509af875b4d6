"""CPU operations of the normalization family (layer, group, instance and
RMS norm) on a :class:`~nbnorm._geometry.Geometry`; kernels in :mod:`.norms`.

Part of the CPU backend (``backend`` re-exports ``norm_forward`` and
``norm_backward``).  Nothing full-size is allocated but the outputs.
"""
from __future__ import annotations

import numpy as np

from .. import _layout, _welford
from . import kernels as K
from . import norm_rows as NR
from . import norms as N
from .backend import (FUSE_BYTES, MIN_ITEMS, _affine, _cached_plan, _chunking, _dual_sums, _flat,
                      _centre, _plan as _x_plan, _raw_moments, _raw_state, _refit, _sized, _stats_of,
                      empty_like, merge_states, stat_dtype)

SHORT_RUN = 64          # reduction runs shorter than this: per-channel path (group/instance)
PART_BUDGET = 1 << 21   # entries of the per-part parameter-gradient rows (each of two);
                        # rows accumulate in the statistics' type, parts add in float64
MAX_PARTS = 64          # parts of the statistics for the parameter gradients


def _plan(geo, *arrays):
    """The plan of ``arrays`` (``x``-shaped; viewed by ``geo``) and the
    parameter map."""
    strides = tuple(geo.view_strides(_layout.element_strides(a, "array")) for a in arrays)
    return _cached_plan(geo.view_shape, geo.axis, strides + (geo.param_strides,))


def _args(plan):
    return (plan.kept_sizes, plan.stat_strides, plan.kept_strides, plan.red_sizes,
            plan.red_strides, plan.bases)


def _param(a, geo, fill):
    if a is None:
        return np.full(geo.n_params, fill)
    return np.ascontiguousarray(a, dtype=np.float64).reshape(geo.n_params)


def _fused(plan, itemsize, n_inputs):
    return plan.n_stats >= MIN_ITEMS and plan.n * itemsize * n_inputs <= FUSE_BYTES


# ------------------------------------------- group/instance, per channel
# Statistics per group are taken the way batch norm takes them per channel:
# per (n, c) over the spatial axes by the reduction kernels of :mod:`.kernels`
# (which stream channels-last rows as vectors), then Chan-merged over each
# group's C/G channels (compensated means); the elementwise passes are batch
# norm's, with per-(n, c) coefficients.
def _per_channel(geo, plan, forward):
    """Group/instance norm: the forward always (measured: faster than the
    fused pass even for NCHW), the backward when the runs are short."""
    return geo.split > 0 and (forward or plan.inner_kept
                              or int(plan.red_sizes[-1]) < SHORT_RUN)


def _spatial(geo):
    return tuple(d for d in range(len(geo.shape)) if d not in (0, geo.split))


def _group_states(x, geo):
    """Per-(n, g) ``(mean, M2)`` (float64, ``(N, G)``) from per-(n, c) states."""
    count, mean, lo, m2 = (a.reshape(geo.shape[0], geo.groups, -1)
                           for a in _raw_state(x, _x_plan(x.shape, _spatial(geo), x), False))
    acc = tuple(a[:, :, 0] for a in (count, mean, m2, lo))
    for j in range(1, count.shape[2]):
        acc = merge_states(acc, tuple(a[:, :, j] for a in (count, mean, m2, lo)))
    return acc[1], acc[2]


def _per_nc(a, geo):
    """A per-(n, g) array repeated over each group's channels: ``(N·C,)``."""
    return np.repeat(a, geo.shape[geo.split] // geo.groups, axis=1).reshape(-1)


def _forward_per_channel(x, y, geo, w, b, eps):
    mean, m2 = _group_states(x, geo)
    var = m2 / geo.n
    with np.errstate(divide="ignore"):      # eps 0, a constant group: inf, as the kernels
        inv = _welford.invstd_of(var, float(eps))
    n = geo.shape[0]
    alpha = _per_nc(inv, geo) * np.tile(w, n)
    centre = _centre(_per_nc(mean, geo), alpha)
    _affine(y, x, None, _spatial(geo), centre, alpha, centre, alpha, np.tile(b, n))
    return mean.reshape(-1), var.reshape(-1), inv.reshape(-1)


def _backward_per_channel(dy, x, dx, geo, c, inv, w):
    sd = stat_dtype(x.dtype)
    n, C = geo.shape[0], geo.shape[geo.split]
    cg, ig = c.reshape(n, geo.groups), inv.reshape(n, geo.groups)
    mu = _per_nc(cg, geo).astype(sd)
    s1c, s2c = (a.reshape(n, C) for a in _dual_sums(dy, x, _x_plan(x.shape, _spatial(geo), dy, x),
                                                    mu))
    per = C // geo.groups
    s1 = (s1c * w).reshape(n, geo.groups, per).sum(axis=2)
    s2 = (s2c * w).reshape(n, geo.groups, per).sum(axis=2)
    _, cb, cc = _welford.backward_coefficients(float(geo.n), ig, 1.0, s1, s2, True)
    inv_nc = _per_nc(ig, geo)
    _affine(dx, dy, x, _spatial(geo), np.zeros(n * C), inv_nc * np.tile(w, n),
            mu.astype(np.float64), _per_nc(cb, geo), _per_nc(cc, geo))
    return (s2c * inv_nc.reshape(n, C)).sum(axis=0), s1c.sum(axis=0)


@_sized
def norm_forward(x, geo, weight, bias, eps, rms, out):
    """``(y, c, var, invstd)`` with ``c`` the mean (0 for RMS) and ``var``
    the biased variance (mean(x²) for RMS): ``c``/``invstd`` of
    ``geo.stat_shape`` in :func:`stat_dtype`, ``var`` float64."""
    y = empty_like(x) if out is None else out
    plan = _plan(geo, x, y)
    w, b = _param(weight, geo, 1.0), _param(bias, geo, 0.0)
    sd = stat_dtype(x.dtype)
    xf, yf = _flat(x), _flat(y)
    if _per_channel(geo, plan, True):
        c, var, inv = _forward_per_channel(x, y, geo, w, b, eps)
    elif NR.short_rows(plan):
        c = np.empty(plan.n_stats)
        var = np.empty(plan.n_stats)
        inv = np.empty(plan.n_stats)
        NR.rows_forward(xf, yf, _args(plan), w, b, float(eps), bool(rms), c, var, inv)
    elif _fused(plan, x.dtype.itemsize, 1):
        c = np.empty(plan.n_stats)
        var = np.empty(plan.n_stats)
        inv = np.empty(plan.n_stats)
        N.norm_forward_fused(xf, yf, _args(plan), w, b, float(eps), bool(rms), c, var, inv)
    else:
        mean, m2 = _raw_moments(x, _plan(geo, x))
        with np.errstate(divide="ignore", invalid="ignore"):
            var = m2 / plan.n
            if rms:
                c = np.zeros(plan.n_stats)
                var += mean * mean
            else:
                c = mean
            inv = _welford.invstd_of(var, float(eps))
        chunk, n_chunks = _chunking(plan.n_stats, plan.n)
        N.norm_apply(xf, yf, _args(plan), w, b, _centre(c, inv), inv, chunk, n_chunks)
    if not K.all_finite(var, var):
        _refit(x, y, plan, float(eps), rms, c, var, inv,
               lambda s: _stats_of(w, plan, [s], 2)[0].reshape(-1),
               lambda s: _stats_of(b, plan, [s], 2)[0].reshape(-1))
    shape = geo.stat_shape
    with np.errstate(over="ignore"):
        return y, c.astype(sd).reshape(shape), var.reshape(shape), inv.astype(sd).reshape(shape)


@_sized
def norm_backward(dy, x, centre, invstd, geo, weight, rms, out):
    """``(dx, dweight, dbias)``; the gradients of ``geo.param_shape`` in
    :func:`stat_dtype`."""
    dx = empty_like(x) if out is None else out
    plan = _plan(geo, dy, x, dx)
    sd = stat_dtype(x.dtype)
    c = (np.zeros(plan.n_stats) if centre is None
         else np.ascontiguousarray(centre, dtype=np.float64).reshape(plan.n_stats))
    inv = np.ascontiguousarray(invstd, dtype=np.float64).reshape(plan.n_stats)
    w = _param(weight, geo, 1.0)
    if _per_channel(geo, plan, False):
        dweight, dbias = _backward_per_channel(dy, x, dx, geo, c, inv, w)
        return (dx, dweight.astype(sd).reshape(geo.param_shape),
                dbias.astype(sd).reshape(geo.param_shape))
    n_parts = max(1, min(MAX_PARTS, plan.n_stats, PART_BUDGET // max(geo.n_params, 1)))
    gw = np.zeros(n_parts * geo.n_params, sd)
    gb = np.zeros(n_parts * geo.n_params, sd)
    N.norm_backward_fused(_flat(dy), _flat(x), _flat(dx), _args(plan), w, c, inv, bool(rms),
                          NR.short_rows(plan), n_parts, gw, gb)
    dweight = gw.reshape(n_parts, -1).sum(axis=0, dtype=np.float64)
    dbias = gb.reshape(n_parts, -1).sum(axis=0, dtype=np.float64)
    return (dx, dweight.astype(sd).reshape(geo.param_shape),
            dbias.astype(sd).reshape(geo.param_shape))
