"""CPU backend: NumPy arrays in and out, Numba kernels in between.

Receives validated arrays from :mod:`nbnorm._api` and runs the operations of
the backend contract (:mod:`nbnorm._contract`): batch norm's as prepared calls
(:mod:`.ops`), the family's (:mod:`.family`), the states of
:class:`nbnorm.Moments`.  The passes they are made of are :mod:`.passes`,
arrays and allocation :mod:`.arrays`.  No full-size temporary is created:
``x``/``dy`` are read in place through flat views, outputs are written in place.
"""
from __future__ import annotations

from functools import wraps

import numpy as np

from .. import _layout, _welford
from . import _threads
from . import kernels as K
from . import ops as _ops
from .arrays import asarray, astype, empty_like, target, wrap  # noqa: F401  (the contract's)
from .family import (norm_backward, norm_forward, prepare_norm_backward,  # noqa: F401
                     prepare_norm_forward)
from .ops import (prepare_backward, prepare_forward, prepare_inference,  # noqa: F401
                  prepare_moments, update_running)
from .passes import SERIAL_ELEMENTS, _affine, _dual_sums, _plan, _raw_state

name = "cpu"
remembers_calls = True     # see nbnorm._contract.Backend
wrap_reads_like = False
array_module = "numpy"
stat_dtype = _welford.stat_dtype    # one definition for every backend


def _sized(fn):
    """Decorate an operation so that small problems run on the calling thread
    (see :mod:`._threads` for the other cases that run serially)."""
    @wraps(fn)
    def wrapper(*args):
        work = args[0].size * (2 if fn.__name__.startswith("backward") else 1)
        if work >= SERIAL_ELEMENTS:
            return fn(*args)
        with _threads.serial_if(True):
            return fn(*args)
    return wrapper


# ---------------------------------------------------------------- operations
def moments(x, axis, ddof):
    """``(mean, var)``: see :func:`.ops.prepare_moments`."""
    return _ops.prepare_moments(x, axis, ddof)(x)


@_sized
def moment_state(x, axis, skipna):
    """``(count, mean, m2, mean_lo)``: int64 and float64 arrays of the statistic
    shape (see :class:`nbnorm.Moments`; ``mean + mean_lo`` is the mean to
    twice float64's precision); NaNs left out with ``skipna``."""
    shape = _layout.stat_shape(x.shape, axis)
    plan = _plan(x.shape, axis, x)
    if plan.n == 0 or plan.n_stats == 0:
        return (np.zeros(shape, np.int64), np.full(shape, np.nan), np.zeros(shape),
                np.zeros(shape))
    count, mean, lo, m2 = _raw_state(x, plan, skipna)
    return tuple(a.reshape(shape) for a in (count.astype(np.int64), mean, m2, lo))


def merge_states(a, b):
    """Two ``(count, mean, m2, mean_lo)`` states merged by Chan's formula with
    compensated means (new arrays)."""
    flat = [np.ascontiguousarray(v, dtype=np.int64 if i % 4 == 0 else np.float64).reshape(-1)
            for i, v in enumerate((*a, *b))]
    out = [np.empty_like(v) for v in flat[:4]]
    K.merge_states(*flat, *out)
    shape = np.shape(a[1])
    return tuple(v.reshape(shape) for v in out)


def state_variance(count, m2, ddof):
    """``(m2/(count − ddof), whether any count − ddof ≤ 0)``; NaN there."""
    dof = count - ddof
    short = dof <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(short, np.nan, m2 / np.where(short, 1, dof))
    return var, bool(short.any())


def sqrt(a):
    return np.sqrt(a)


def forward(x, weight, bias, axis, eps, out):
    """Training forward: see :func:`.ops.prepare_forward`."""
    return _ops.prepare_forward(x, weight, bias, axis, eps, out)(x, weight, bias, out)


def inference(x, mean, var, weight, bias, axis, eps, out):
    """See :func:`.ops.prepare_inference`."""
    return _ops.prepare_inference(x, mean, var, weight, bias, axis, eps, out)(
        x, mean, var, weight, bias, out)


def backward(dy, x, mean, invstd, weight, axis, training, out):
    """See :func:`.ops.prepare_backward`."""
    return _ops.prepare_backward(dy, x, mean, invstd, weight, axis, training, out)(
        dy, x, mean, invstd, weight, out)


@_sized
def backward_sums(dy, x, mean, axis):
    """The backward's reduction alone: ``(Σdy, Σdy·(x − mean))`` per statistic,
    float64, statistic-shaped, the mean rounded to the statistics' dtype
    first as :func:`backward` does (for Dask's chunks, whose sums are added
    across chunks before :func:`backward_apply`)."""
    shape = _layout.stat_shape(x.shape, axis)
    plan = _plan(x.shape, axis, dy, x)
    if plan.n == 0 or plan.n_stats == 0:
        return np.zeros(shape), np.zeros(shape)
    mu = np.ascontiguousarray(mean, dtype=stat_dtype(x.dtype)).reshape(plan.n_stats)
    s1, s2 = _dual_sums(dy, x, plan, mu)
    return s1.reshape(shape), s2.reshape(shape)


@_sized
def backward_apply(dy, x, mean, invstd, weight, s1, s2, n, axis, training):
    """The backward's elementwise pass alone: ``dx = dy·a + (x − mean)·b + c``
    with :func:`nbnorm._welford.backward_coefficients` from the sums of
    :func:`backward_sums` over all ``n`` values of each statistic (``n`` a
    number, or statistic-shaped counts); ``x``, ``mean`` and the sums are not
    read unless ``training``.  Per-statistic arguments may carry the reduced
    axes as size-1 dimensions."""
    shape = _layout.stat_shape(dy.shape, axis)
    m = int(np.prod(shape, dtype=np.int64))
    dx = empty_like(dy)
    if dy.size == 0:
        return dx
    a, b, c = _welford.host_backward_coefficients(m, n, invstd, weight, s1, s2, training)
    zero = np.zeros(m)
    mu = (np.ascontiguousarray(mean, dtype=stat_dtype(dy.dtype)).reshape(m).astype(np.float64)
          if training else zero)
    _affine(dx, dy, x if training else None, axis, zero, a, mu, b, c)
    return dx
