"""Batch norm's CPU operations as prepared calls: everything that follows
from a call's signature (plan, kernel arguments, chunking, which kernels,
the thread decision, buffer sizes) is resolved once by ``prepare_*``; the
returned ``run`` only allocates the outputs and launches.

Part of the CPU backend (``backend`` re-exports the operations: each is
``prepare_<op>(…)(…)``, so a first call and a prepared one run the same
code).  ``run`` may be called from several threads at once: it keeps no
state between calls.
"""
from __future__ import annotations

import numpy as np

from .. import _layout, _welford
from .._welford import stat_dtype
from . import _memory, _threads
from . import kernels as K
from .arrays import _flat, _stat_vector, empty_like, narrowed
from .passes import (SERIAL_ELEMENTS, _affine_prepared, _cached_plan, _dual_sums, _fusable,
                     _kernel_args, _plan, _refit, _relative_moments, _split)
from .merge import (backward_coefficient_vectors, forward_coefficients, inference_scale,
                    update_running as _update_running)


def _vector(n, fill, dtype=np.float64, like=None):
    """``vector(a)``: a parameter as a flat vector of ``n`` in ``dtype``
    (:func:`.arrays._stat_vector`), one constant vector of ``fill`` shared by
    the calls of a signature when absent.  Never written, it is not flagged
    read-only: Numba would compile another specialization of every kernel
    that reads it.  ``like``: the parameter of the call being prepared; where
    it is already a C-contiguous vector in ``dtype``, ``a`` itself is passed
    (dtype, shape and strides are part of a call's signature)."""
    direct = _direct(like, dtype)
    if direct is not None:
        return direct
    const = np.full(n, fill, dtype)
    return lambda a: const if a is None else _stat_vector(a, n, fill, dtype)


def _direct(like, dtype):
    """``a`` or a flat view of it, for parameters like ``like`` that need no
    conversion to a C-contiguous vector in ``dtype``; else None."""
    if like is None or like.dtype != dtype or not like.flags.c_contiguous:
        return None
    if like.ndim == 1:
        return lambda a: a
    return lambda a: a.reshape(-1)


def _float32_as_is(a, n, fill):
    """:func:`_vector` of float64 for the parameter ``a`` of a prepared call,
    except that a writable float32 ``a`` is passed as it is (a flat view):
    the per-statistic coefficient kernels widen its values exactly, and a
    call saves the conversion.  Decided once: dtype and writability are part
    of a call's signature."""
    if a is not None and a.dtype == np.float32 and a.flags.writeable:
        return _direct(a, a.dtype) or (lambda a: np.ascontiguousarray(a).reshape(n))
    return _vector(n, fill, like=a)


def _strides(a):
    return tuple(_layout.element_strides(a, "array"))


def _serial(size):
    return size < SERIAL_ELEMENTS


class _Outputs:
    """The plans over an operation's operands, which include its output
    ``y``: made for the first ``y``'s strides (those ``empty_like`` gives,
    or the given ``out``'s) and remade when a call's ``y`` has others."""

    def __init__(self, plans_of):
        self.plans_of = plans_of
        self.last = (None, None)        # (strides, plans): one pair, replaced whole

    def get(self, y):
        strides, plans = self.last
        if y.strides != strides:
            plans = self.plans_of(y)
            self.last = (y.strides, plans)
        return plans


def prepare_moments(x, axis, ddof):
    """``run(x) → (mean, var)``, statistic-shaped in :func:`stat_dtype`,
    ``var = M2/(n − ddof)``; NaN for empty reductions (``M2/0`` as NumPy)."""
    shape = _layout.stat_shape(x.shape, axis)
    sd = stat_dtype(x.dtype)
    plan = _plan(x.shape, axis, x)
    if plan.n == 0 or plan.n_stats == 0:
        return lambda x: (np.full(shape, np.nan, sd), np.full(shape, np.nan, sd))
    serial, n_stats, dof = _serial(x.size), plan.n_stats, float(max(plan.n - ddof, 0))
    args, split = _kernel_args(plan, [0]), _split(plan)

    def run(x):
        before = _threads.enter_serial(serial)
        try:
            _, mean_rel, m2, pivots = _relative_moments(x, plan, False, args, split)
        finally:
            _threads.leave_serial(before)
        mean = np.empty(n_stats, sd)
        var = np.empty(n_stats, sd)
        K.mean_and_variance(pivots, mean_rel, m2, dof, mean, var)
        return mean.reshape(shape), var.reshape(shape)
    return run


def prepare_forward(x, weight, bias, axis, eps, out):
    """``run(x, weight, bias, out) → (y, mean, biased var, invstd)``.
    ``y = (x − hi)·α + (bias − lo·α)`` with the mean ``hi + lo`` (rounded and
    its error), ``α = weight·invstd``: y keeps no rounding of the mean.

    The statistics are planned over ``x`` alone (fused with the
    normalization only when ``y`` has ``x``'s strides, which plans the same
    runs), so they do not depend on the layout of ``out``."""
    shape = _layout.stat_shape(x.shape, axis)
    sd = stat_dtype(x.dtype)
    eps = float(eps)
    xplan = _plan(x.shape, axis, x)
    n_stats, n = xplan.n_stats, xplan.n
    serial = _serial(x.size)
    w_of, b_of = _vector(n_stats, 1.0, like=weight), _vector(n_stats, 0.0, like=bias)
    xshape, xs = x.shape, _strides(x)
    outputs = _Outputs(lambda y: (_cached_plan(xshape, axis, (xs, _strides(y))),
                                  _cached_plan(xshape, axis, (xs, _strides(y), xs))))
    x_strides, itemsize = x.strides, x.dtype.itemsize
    ahead = _memory.two_fit_in_l2(n * itemsize)
    x_args, x_split = _kernel_args(xplan, [0]), _split(xplan)

    def run(x, weight, bias, out):
        before = _threads.enter_serial(serial)
        try:
            y = empty_like(x) if out is None else out
            plan, affine_plan = outputs.get(y)
            w, b = w_of(weight), b_of(bias)
            if y.strides == x_strides and _fusable(plan, itemsize, 1):
                mean = np.empty(n_stats)
                var = np.empty(n_stats)
                invstd = np.empty(n_stats)
                K.forward_fused(_flat(x), _flat(y), _kernel_args(plan, [0, 1]), w, b, eps,
                                mean, var, invstd, _memory.streamed(y), ahead)
                if not K.all_finite(var, var):
                    _refit(x, y, plan, eps, False, mean, var, invstd, w.__getitem__,
                           b.__getitem__)
                # a variance beyond float32 is inf
                return (y, narrowed(mean, sd).reshape(shape), narrowed(var, sd).reshape(shape),
                        narrowed(invstd, sd).reshape(shape))
            _, mean_rel, m2, pivots = _relative_moments(x, xplan, False, x_args, x_split)
            mean, var, invstd = np.empty(n_stats, sd), np.empty(n_stats, sd), np.empty(n_stats, sd)
            centre, alpha, shift = np.empty(n_stats), np.empty(n_stats), np.empty(n_stats)
            forward_coefficients(pivots, mean_rel, m2, float(n), eps, w, b, mean, var, invstd,
                                 centre, alpha, shift)
            _affine_prepared(y, x, None, affine_plan, centre, alpha, centre, alpha, shift)
            return y, mean.reshape(shape), var.reshape(shape), invstd.reshape(shape)
        finally:
            _threads.leave_serial(before)
    return run


def prepare_inference(x, mean, var, weight, bias, axis, eps, out):
    """``run(x, mean, var, weight, bias, out) → y``,
    ``y = (x − mean)/√(var + eps)·weight + bias`` with given statistics."""
    n_stats = int(np.prod(_layout.stat_shape(x.shape, axis), dtype=np.int64))
    eps = float(eps)
    serial = _serial(x.size)
    w_of, b_of = _vector(n_stats, 1.0, like=weight), _vector(n_stats, 0.0, like=bias)
    var_of, mean_of = _vector(n_stats, 0.0, like=var), _vector(n_stats, 0.0, like=mean)
    xshape, xs = x.shape, _strides(x)
    outputs = _Outputs(lambda y: _cached_plan(xshape, axis, (xs, _strides(y), xs)))

    def run(x, mean, var, weight, bias, out):
        before = _threads.enter_serial(serial)
        try:
            y = empty_like(x) if out is None else out
            alpha = np.empty(n_stats)
            inference_scale(var_of(var), eps, w_of(weight), alpha)
            mu = mean_of(mean)
            _affine_prepared(y, x, None, outputs.get(y), mu, alpha, mu, alpha, b_of(bias))
            return y
        finally:
            _threads.leave_serial(before)
    return run


def prepare_backward(dy, x, mean, invstd, weight, axis, training, out):
    """``run(dy, x, mean, invstd, weight, out) → (dx, dweight, dbias)``;
    dweight/dbias of the statistic shape in :func:`stat_dtype`, planned over
    ``dy`` and ``x`` alone (as the forward's statistics)."""
    shape = _layout.stat_shape(x.shape, axis)
    sd = stat_dtype(x.dtype)
    training = bool(training)
    dual = _plan(x.shape, axis, dy, x)
    n_stats, n = dual.n_stats, dual.n
    serial = _serial(x.size)
    w_of, inv_of = _vector(n_stats, 1.0, like=weight), _vector(n_stats, 0.0, like=invstd)
    xshape, xs, dys = x.shape, _strides(x), _strides(dy)
    outputs = _Outputs(lambda dx: (_cached_plan(xshape, axis, (dys, xs, _strides(dx))),
                                   _cached_plan(xshape, axis, (dys, _strides(dx),
                                                               xs if training else dys))))
    dual_args, dual_split = _kernel_args(dual, [0, 1]), _split(dual)
    strides, itemsize = (dy.strides, x.strides), x.dtype.itemsize
    zero = np.zeros(n_stats)

    def run(dy, x, mean, invstd, weight, out):
        before = _threads.enter_serial(serial)
        try:
            dx = empty_like(x) if out is None else out
            plan, affine_plan = outputs.get(dx)
            mu = np.ascontiguousarray(mean, dtype=sd).reshape(n_stats)
            inv = inv_of(invstd)
            w = w_of(weight)
            if dx.strides in strides and _fusable(plan, itemsize, 2):
                dweight = np.empty(n_stats)
                dbias = np.empty(n_stats)
                xf = _flat(x)
                K.backward_fused(_flat(dy), xf, xf if training else None, _flat(dx),
                                 _kernel_args(plan, [0, 1, 2]), mu, inv, w, training,
                                 dweight, dbias, _memory.streamed(dx))
                return dx, narrowed(dweight, sd).reshape(shape), narrowed(dbias, sd).reshape(shape)
            s1, s2 = _dual_sums(dy, x, dual, mu, dual_args, dual_split)
            a, b, c = np.empty(n_stats), np.empty(n_stats), np.empty(n_stats)
            dweight, dbias = np.empty(n_stats, sd), np.empty(n_stats, sd)
            backward_coefficient_vectors(float(n), inv, w, s1, s2, training, a, b, c,
                                         dweight, dbias)
            _affine_prepared(dx, dy, x if training else None, affine_plan, zero, a,
                             mu.astype(np.float64), b, c)
            return dx, dweight.reshape(shape), dbias.reshape(shape)
        finally:
            _threads.leave_serial(before)
    return run


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def update_running(running, batch, momentum, scale):
    """``running ← (1 − momentum)·running + momentum·scale·batch`` in place,
    for the statistics where ``scale·batch`` is finite (``scale`` a float, or
    one per statistic); returns how many were skipped."""
    dt = running.dtype
    if (isinstance(scale, float) and dt in (_F32, _F64)     # `in` tests identity first
            and running.flags.c_contiguous and batch.flags.c_contiguous):
        return _update_running(running.ravel(), batch.ravel(), float(momentum), float(scale))
    batch = batch.astype(np.float64) * scale
    new = (1.0 - momentum) * running.astype(np.float64) + momentum * batch
    ok = np.isfinite(batch)
    running[...] = np.where(ok, new, running)
    return int(ok.size - np.count_nonzero(ok))

