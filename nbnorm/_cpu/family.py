"""CPU operations of the normalization family (layer, group, instance and
RMS norm) on a :class:`~nbnorm._geometry.Geometry`; kernels in :mod:`.norms`.

Part of the CPU backend (``backend`` re-exports ``norm_forward`` and
``norm_backward``).  Nothing full-size is allocated but the outputs.
"""
from __future__ import annotations

import numpy as np

from .. import _layout
from .._welford import stat_dtype
from . import kernels as K
from . import norms as N
from . import _memory, _threads
from .arrays import _flat, empty_like, narrowed
from .passes import (FUSE_BYTES, MIN_ITEMS, SERIAL_ELEMENTS, _affine_prepared, _cached_plan,
                     _chunking, _dual_sums, _kernel_args, _refit,
                     _relative_moments, _split, _stats_of)
from .merge import (forward_coefficients, group_backward_coefficients, group_forward_coefficients,
                    per_channel)
from .ops import _float32_as_is, _Outputs, _strides, _vector

SHORT_RUN = 64          # reduction runs shorter than this: per-channel path (group/instance)
PART_BUDGET = 1 << 21   # entries of the per-part parameter-gradient rows (each of two);
                        # rows accumulate in the statistics' type, parts add in float64
MAX_PARTS = 64          # parts of the statistics for the parameter gradients
PART_ELEMENTS = 1 << 14 # elements of x per part at least: adding up the parts'
                        # rows cost more than a small backward's own work


def _plan(geo, *arrays):
    """The plan of ``arrays`` (``x``-shaped; viewed by ``geo``) and the
    parameter map."""
    strides = tuple(geo.view_strides(_layout.element_strides(a, "array")) for a in arrays)
    return _cached_plan(geo.view_shape, geo.axis, strides + (geo.param_strides,))


def _args(plan):
    return (plan.kept_sizes, plan.stat_strides, plan.kept_strides, plan.red_sizes,
            plan.red_strides, plan.bases)


def _fused(plan, itemsize, n_inputs, serial=False):
    """One work item per statistic: enough statistics to share among the
    threads (any number on one thread), each small enough to stay in cache."""
    return (plan.n_stats >= MIN_ITEMS or serial) and plan.n * itemsize * n_inputs <= FUSE_BYTES


# ------------------------------------------- group/instance, per group or channel
# Statistics per group are taken by batch norm's reduction kernels: per
# (n, g) directly where a group's values lie in long runs (NCHW: one run of
# C/G·H·W), else per (n, c) over the spatial axes (which stream
# channels-last rows as vectors) and Chan-merged over each group's C/G
# channels (compensated means); the elementwise passes are batch norm's,
# with per-(n, c) coefficients.
def _per_channel(geo, plan, forward, nbytes):
    """Group/instance norm on batch norm's kernels per group or channel:
    the forward always, the backward unless the family's fused pass, which
    reads ``dy`` and ``x`` from memory once instead of twice, can take long
    runs of data (``nbytes`` each) beyond the last-level cache.  In cache the
    per-channel passes are faster, the fused pass's parameter map cutting
    each statistic into per-channel runs (float32, G = 4/32/C:
    (16, 64, 16, 16) 132–245 µs against 99–103; (64, 256, 16, 16)
    1.9–3.4 ms against 1.5–1.7); beyond it (103 MB) the fused pass is
    about a tenth faster."""
    return geo.split > 0 and (forward or plan.inner_kept or int(plan.red_sizes[-1]) < SHORT_RUN
                              or 2 * nbytes <= _memory.L3_BYTES)


def _spatial(geo):
    return tuple(d for d in range(len(geo.shape)) if d not in (0, geo.split))


def _group_statistics(x, geo, x_plan):
    """``(plan, kernel arguments, parts per group)`` of group norm's
    statistics: over each group (``x_plan``) where its runs are long,
    else per (n, c) over the spatial axes."""
    if not x_plan.inner_kept and int(x_plan.red_sizes[-1]) >= SHORT_RUN:
        plan, parts = x_plan, 1
    else:
        plan = _cached_plan(x.shape, _spatial(geo), (_strides(x),))
        parts = geo.shape[geo.split] // geo.groups
    return plan, (_kernel_args(plan, [0]), _split(plan)), parts


def _in_dtype(sd, a, b):
    """Where a coefficient kernel writes the float64 vectors ``a``, ``b``
    again in the statistics' dtype ``sd``: ``a``, ``b`` themselves for
    float64, else fresh vectors of their sizes."""
    if sd == np.float64:
        return a, b
    return np.empty(a.size, sd), np.empty(b.size, sd)


def _forward_per_channel(x, y, sizes, w, b, eps, stat_plan, stat_args, affine_plan, sd):
    """Statistics per group (:func:`_group_statistics`), merged and turned
    into the affine map per (n, c) in one compiled call, then batch norm's
    affine pass; ``(mean, var, invstd, mean and invstd in sd)``.  ``sizes``:
    (groups, channels per group, parts per group, N·G, N·C, values per part)."""
    groups, per, parts, n_groups, n_c, n_part = sizes
    _, mean_rel, m2, pivots = _relative_moments(x, stat_plan, False, *stat_args)
    mean, var, inv = np.empty(n_groups), np.empty(n_groups), np.empty(n_groups)
    mean_st, inv_st = _in_dtype(sd, mean, inv)
    centre, alpha, shift = np.empty(n_c), np.empty(n_c), np.empty(n_c)
    group_forward_coefficients(pivots, mean_rel, m2, n_part, groups, per, parts, eps, w, b, mean,
                               var, inv, centre, alpha, shift, mean_st, inv_st)
    _affine_prepared(y, x, None, affine_plan, centre, alpha, centre, alpha, shift)
    return mean, var, inv, mean_st, inv_st


def _backward_per_channel(dy, x, dx, geo, c, inv, w, sd, dual_plan, dual_args, affine_plan,
                          zero):
    """``(dweight, dbias)`` in ``sd``; ``dx`` written."""
    n_c, C = dual_plan.n_stats, geo.shape[geo.split]
    per = C // geo.groups
    mu, mu64 = np.empty(n_c, sd), np.empty(n_c)
    per_channel(c, per, mu, mu64)
    # group_backward_coefficients adds the sums to +0.0: their zeros' signs do not matter
    s1c, s2c = _dual_sums(dy, x, dual_plan, mu, *dual_args, signed_zeros=True)
    a, cb, cc = np.empty(n_c), np.empty(n_c), np.empty(n_c)
    dweight, dbias = np.empty(C), np.empty(C)
    dweight_st, dbias_st = _in_dtype(sd, dweight, dbias)
    group_backward_coefficients(s1c, s2c, inv, w, geo.groups, per, float(geo.n), a, cb, cc,
                                dweight, dbias, dweight_st, dbias_st)
    _affine_prepared(dx, dy, x, affine_plan, zero, a, mu64, cb, cc)
    return dweight_st, dbias_st


def _plans(geo, *arrays):
    """``plans_of(y)`` for :class:`.ops._Outputs`: the plan of ``(*arrays, y)``
    and the parameter map, from strides taken now (no array is kept)."""
    strides = tuple(geo.view_strides(_layout.element_strides(a, "array")) for a in arrays)
    return lambda y: _cached_plan(geo.view_shape, geo.axis, strides + (
        geo.view_strides(_layout.element_strides(y, "array")), geo.param_strides))


def _same_runs(plan, x_plan):
    """Whether ``plan`` (over x, out and the parameters) walks each statistic
    of x in the same runs as ``x_plan`` (over x alone)."""
    return (plan.inner_kept == x_plan.inner_kept
            and np.array_equal(plan.red_sizes, x_plan.red_sizes)
            and np.array_equal(plan.red_strides[0], x_plan.red_strides[0]))


def _forward_plans(plan, x_plan):
    """``(plan, same runs as x_plan, one run per statistic, None)``: what the
    forward of a layout of ``y`` needs, made once per layout."""
    return plan, _same_runs(plan, x_plan), N.one_run(plan), None


def _forward_per_statistic(x, xf, yf, plan, same_runs, one_run, x_plan, w, b, eps, rms,
                           serial):
    """Layer and RMS norm: statistics and ``y`` in one work item per
    statistic, or batch norm's reduction kernels (chunked, or by columns when
    the innermost dimension is kept) and then the map; ``(c, var, invstd)``
    flat float64.  Either way the statistics, and ``y`` without weight and
    bias, are batch norm's over the same axes, bit for bit."""
    if same_runs and not plan.inner_kept and _fused(plan, x.dtype.itemsize, 1, serial):
        c, var, inv = (np.empty(plan.n_stats) for _ in range(3))
        N.norm_forward_fused(xf, yf, _args(plan), w, b, eps, rms, one_run, c, var, inv)
        return c, var, inv
    _, mean_rel, m2, pivots = _relative_moments(x, x_plan)
    n = plan.n_stats
    c, var, inv, centre, alpha, shift = (np.empty(n) for _ in range(6))
    if rms:     # y = x·invstd·w + b, invstd = 1/√(M2/n + mean² + eps)
        N.rms_statistics(pivots, mean_rel, m2, float(plan.n), eps, var, inv)
        c[:] = centre[:] = shift[:] = 0.0
        alpha[:] = inv
    else:       # batch norm's map (weight 1, bias 0): the same bits
        forward_coefficients(pivots, mean_rel, m2, float(plan.n), eps, np.ones(n), np.zeros(n),
                             c, var, inv, centre, alpha, shift)
    chunk, n_chunks = _chunking(n, plan.n)
    N.norm_apply(xf, yf, _args(plan), w, b, centre, alpha, shift, chunk, n_chunks)
    return c, var, inv


def norm_forward(x, geo, weight, bias, eps, rms, out):
    """See :func:`prepare_norm_forward`."""
    return prepare_norm_forward(x, geo, weight, bias, eps, rms, out)(x, weight, bias, out)


def prepare_norm_forward(x, geo, weight, bias, eps, rms, out):
    """``run(x, weight, bias, out) → (y, c, var, invstd)`` with ``c`` the mean
    (0 for RMS) and ``var`` the biased variance (mean(x²) for RMS):
    ``c``/``invstd`` of ``geo.stat_shape`` in :func:`stat_dtype`, ``var`` float64."""
    sd = stat_dtype(x.dtype)
    eps, rms = float(eps), bool(rms)
    serial = x.size < SERIAL_ELEMENTS
    # group/instance norm's per-(n, c) coefficients: the parameters in float64
    # (float32 ones as they are: the kernels widen them exactly)
    w_of, b_of = _float32_as_is(weight, geo.n_params, 1.0), _float32_as_is(bias, geo.n_params, 0.0)
    # the per-element passes take the parameters in the statistics' type
    wn_of = _vector(geo.n_params, 1.0, sd, like=weight)
    bn_of = _vector(geo.n_params, 0.0, sd, like=bias)
    view_plans = _plans(geo, x)
    # the statistics' plan: over x alone, as batch norm's (out and the
    # parameters do not change how the statistics are summed)
    x_plan = _cached_plan(geo.view_shape, geo.axis,
                          (geo.view_strides(_layout.element_strides(x, "array")),))
    shape = geo.stat_shape
    if geo.split > 0:           # group/instance: statistics per (n, g) or (n, c) first
        xshape, spatial, xs = x.shape, _spatial(geo), _strides(x)
        stat_plan, stat_args, parts = _group_statistics(x, geo, x_plan)
        C = geo.shape[geo.split]
        sizes = (geo.groups, C // geo.groups, parts, geo.shape[0] * geo.groups, geo.shape[0] * C,
                 float(stat_plan.n))
        outputs = _Outputs(lambda y: (view_plans(y), False, False,
                                      _cached_plan(xshape, spatial, (xs, _strides(y), xs))))
    else:
        outputs = _Outputs(lambda y: _forward_plans(view_plans(y), x_plan))

    def run(x, weight, bias, out):
        before = _threads.enter_serial(serial)
        try:
            y = empty_like(x) if out is None else out
            plan, same_runs, one_run, affine_plan = outputs.get(y)
            c_st = inv_st = None
            if _per_channel(geo, plan, True, x.nbytes):
                w, b = w_of(weight), b_of(bias)
                c, var, inv, c_st, inv_st = _forward_per_channel(
                    x, y, sizes, w, b, eps, stat_plan, stat_args, affine_plan, sd)
            else:
                w, b = wn_of(weight), bn_of(bias)
                c, var, inv = _forward_per_statistic(x, _flat(x), _flat(y), plan, same_runs,
                                                     one_run, x_plan, w, b, eps, rms, serial)
            if not K.all_finite(var, var):
                _refit(x, y, plan, eps, rms, c, var, inv,
                       lambda s: _stats_of(w, plan, [s], 2)[0].reshape(-1),
                       lambda s: _stats_of(b, plan, [s], 2)[0].reshape(-1))
                c_st = inv_st = None
            if c_st is None:
                c_st, inv_st = narrowed(c, sd), narrowed(inv, sd)
            return y, c_st.reshape(shape), var.reshape(shape), inv_st.reshape(shape)
        finally:
            _threads.leave_serial(before)
    return run


def norm_backward(dy, x, centre, invstd, geo, weight, rms, out):
    """See :func:`prepare_norm_backward`."""
    return prepare_norm_backward(dy, x, centre, invstd, geo, weight, rms, out)(
        dy, x, centre, invstd, weight, out)


def prepare_norm_backward(dy, x, centre, invstd, geo, weight, rms, out):
    """``run(dy, x, centre, invstd, weight, out) → (dx, dweight, dbias)``; the
    gradients of ``geo.param_shape`` in :func:`stat_dtype`."""
    sd = stat_dtype(x.dtype)
    rms = bool(rms)
    serial = (2 if geo.split == 0 else 1) * x.size < SERIAL_ELEMENTS
    w_of = _float32_as_is(weight, geo.n_params, 1.0)
    wn_of = _vector(geo.n_params, 1.0, sd, like=weight)
    n_stats = int(np.prod(geo.stat_shape, dtype=np.int64))
    inv_of = _vector(n_stats, 0.0, like=invstd)
    view_plans = _plans(geo, dy, x)
    if geo.split > 0:
        c_of = _float32_as_is(centre, n_stats, 0.0)     # per channel: expanded exactly
        inv_as_is = _float32_as_is(invstd, n_stats, 0.0)
        xshape, spatial, xs, dys = x.shape, _spatial(geo), _strides(x), _strides(dy)
        dual_plan = _cached_plan(xshape, spatial, (dys, xs))
        dual_args = (_kernel_args(dual_plan, [0, 1]), _split(dual_plan))
        zero = np.zeros(dual_plan.n_stats)      # never written
        outputs = _Outputs(lambda dx: (view_plans(dx), N.one_run(view_plans(dx)),
                                       _cached_plan(xshape, spatial, (dys, _strides(dx), xs))))
    else:
        outputs = _Outputs(lambda dx: (view_plans(dx), N.one_run(view_plans(dx)), None))

    def run(dy, x, centre, invstd, weight, out):
        before = _threads.enter_serial(serial)
        try:
            dx = empty_like(x) if out is None else out
            plan, one_run, affine_plan = outputs.get(dx)
            if _per_channel(geo, plan, False, x.nbytes):
                dweight, dbias = _backward_per_channel(dy, x, dx, geo, c_of(centre),
                                                       inv_as_is(invstd), w_of(weight), sd,
                                                       dual_plan, dual_args, affine_plan, zero)
                return dx, dweight.reshape(geo.param_shape), dbias.reshape(geo.param_shape)
            inv = inv_of(invstd)
            c = (np.zeros(n_stats) if centre is None
                 else np.ascontiguousarray(centre, dtype=np.float64).reshape(n_stats))
            n_parts = max(1, min(MAX_PARTS, n_stats, PART_BUDGET // max(geo.n_params, 1),
                                 x.size // PART_ELEMENTS))
            gw = np.zeros(n_parts * geo.n_params, sd)
            gb = np.zeros(n_parts * geo.n_params, sd)
            N.norm_backward_fused(_flat(dy), _flat(x), _flat(dx), _args(plan), wn_of(weight), c,
                                  inv, rms, one_run, n_parts, gw, gb)
            dweight = gw.reshape(n_parts, -1).sum(axis=0, dtype=np.float64)
            dbias = gb.reshape(n_parts, -1).sum(axis=0, dtype=np.float64)
            return (dx, narrowed(dweight, sd).reshape(geo.param_shape),
                    narrowed(dbias, sd).reshape(geo.param_shape))
        finally:
            _threads.leave_serial(before)
    return run
