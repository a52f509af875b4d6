"""The passes every CPU operation is made of, launched over a
:class:`~nbnorm._layout.Plan`: the statistics (relative moments, their
repair where sums overflowed), the backward's dual sums, and the
elementwise pass ``out = (u − cu)·ca + (v − cv)·cb + cc``; with the plan
caches and the split of a reduction into work items and chunks.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import _extremes, _layout, _welford
from . import _memory
from . import kernels as K
from .arrays import _flat
from .merge import absolute_state

MIN_ITEMS = 64            # work items to aim for (load balance across threads)
MIN_CHUNK = 32768         # fewest elements a chunk of one statistic may hold
FUSE_BYTES = 4 << 20      # per-statistic footprint up to which passes are fused
FUSE_RUNS = 16            # runs per statistic up to which in-cache passes are fused
# Below this size (elements of x) a call runs on one thread: waking the
# others costs more than they save.  A backward of batch norm or of group and
# instance norm (two launches) keeps one thread to the same size, layer and RMS
# norm's fused backward to half of it.  Measured with ``python -m
# benchmarks.threads`` (docs/performance.md, "Threads"); the crossing moves
# between 2^16 and 2^17.5 elements with the load of this shared machine.
SERIAL_ELEMENTS = 1 << 17


def _plan(shape, axis, *arrays):
    """The :class:`~nbnorm._layout.Plan` of ``arrays`` (all of ``shape``)."""
    return _cached_plan(tuple(shape), axis, tuple(
        tuple(_layout.element_strides(a, "array")) for a in arrays))


@lru_cache(maxsize=256)
def _cached_plan(shape, axis, strides):
    return _layout.make_plan(shape, axis, [list(s) for s in strides])


@lru_cache(maxsize=256)
def _cached_args(plan, order):
    order = list(order)
    return (plan.kept_sizes, plan.stat_strides,
            np.ascontiguousarray(plan.kept_strides[order]), plan.red_sizes,
            np.ascontiguousarray(plan.red_strides[order]), np.ascontiguousarray(plan.bases[order]))


@lru_cache(maxsize=256)
def _order_args(plan, order):
    """Memory-order dims of a plan for an elementwise kernel with operands ``order``."""
    order = list(order)
    return (plan.order_sizes, plan.order_stat_strides,
            np.ascontiguousarray(plan.order_strides[order]), np.ascontiguousarray(plan.bases[order]))


def _kernel_args(plan, order):
    """Plan arrays for a kernel whose operands are ``order`` (plan rows)."""
    return _cached_args(plan, tuple(order))


def _chunking(n_items, n, min_chunk=MIN_CHUNK):
    """``(chunk, n_chunks)``: split a range of ``n`` so that ``n_items·n_chunks``
    reaches ``MIN_ITEMS`` without chunks shorter than ``min_chunk``."""
    n_chunks = 1
    if n_items < MIN_ITEMS:
        n_chunks = max(1, min(-(-MIN_ITEMS // max(n_items, 1)), n // max(min_chunk, 1)))
    chunk = max(-(-n // n_chunks), 1)
    return chunk, -(-n // chunk)


def _split(plan):
    """``(tile, chunk, n_chunks)`` of a reduction: channels-last work items are
    tiles of ≤ ``K.TILE`` adjacent statistics × chunks of rows; otherwise
    statistics × chunks of their reduction range (``tile`` unused)."""
    if not plan.inner_kept:
        return (0,) + _chunking(plan.n_stats, plan.n)
    inner = int(plan.kept_sizes[-1])
    tile = min(inner, K.TILE)
    n_items = (plan.n_stats // inner) * (-(-inner // tile))
    return (tile,) + _chunking(n_items, plan.n, max(1, MIN_CHUNK // tile))


def _fusable(plan, itemsize, n_inputs):
    """Whether reduction and elementwise pass run fused, statistic by
    statistic.  Fusing saves a read of the inputs from memory, which pays
    when they do not fit in the last-level cache; in cache, a statistic made
    of many short runs far apart (NCHW with N > 16) is faster in two passes,
    the elementwise one in memory order (NCHW float32 forward, (64, 256, 16,
    16): 1.5 ms against 2.7 fused; (256, 256, 7, 7): 1.9 against 3.6).
    The choice never changes a result's bits."""
    return (not plan.inner_kept and plan.n_stats >= MIN_ITEMS
            and plan.n * itemsize * n_inputs <= FUSE_BYTES
            and (plan.n <= FUSE_RUNS * plan.inner_len
                 or plan.n * plan.n_stats * itemsize > _memory.L3_BYTES))


def _raw_moments(x, plan):
    """Per-statistic ``(mean, M2)`` in float64, flat C-order statistic arrays."""
    _, mean, _, m2 = _raw_state(x, plan, False)
    return mean, m2


def _relative_moments(x, plan, skipna=False, args=None, split=None):
    """The kernels' per-statistic ``(part_count, mean − pivot, M2, pivot)``,
    float64 flat C-order statistic arrays, chunks merged; ``part_count``
    (the chunks' counts of non-NaN values) only with ``skipna``, else None
    (which compiles the kernels without NaN tests).  ``args``/``split``:
    those of ``plan`` when the caller has them already."""
    xf = _flat(x)
    args = _kernel_args(plan, [0]) if args is None else args
    tile, chunk, n_chunks = _split(plan) if split is None else split
    pc = np.empty((n_chunks, plan.n_stats)) if skipna else None
    pm = np.empty((n_chunks, plan.n_stats))
    pv = np.empty((n_chunks, plan.n_stats))
    pivots = np.empty(plan.n_stats)
    if plan.inner_kept:
        K.moments_inner_kept(xf, args, tile, chunk, n_chunks, pc, pm, pv, pivots)
    else:
        K.moments_inner_reduced(xf, args, chunk, n_chunks, pc, pm, pv, pivots)
    if n_chunks == 1:
        mean, m2 = pm[0], pv[0]
    else:
        mean = np.empty(plan.n_stats)
        m2 = np.empty(plan.n_stats)
        K.merge_moments(pc, pm, pv, plan.n, chunk, mean, m2)
    if not K.all_finite(mean, m2):
        def rows_of(stats):
            return _stats_of(x, plan, stats)[0].reshape(stats.size, plan.n)
        _extremes.repair(rows_of, mean, m2, pivots, skipna)
    return pc, mean, m2, pivots


def _stats_of(a, plan, stats, op=0):
    """The elements of operand ``op`` (``a``) of the statistics at flat
    positions ``stats``: a writable ``(len(stats), *red_sizes)`` strided
    gather (rare paths only: :mod:`nbnorm._extremes`), and the index that
    addresses them in :func:`_operand_view`."""
    pos = np.zeros((), np.int64)
    for size, stride in zip(plan.kept_sizes, plan.stat_strides):
        pos = pos[..., None] + stride * np.arange(size)
    k_of = np.empty(plan.n_stats, np.int64)
    k_of[pos.reshape(-1)] = np.arange(plan.n_stats)
    index = np.unravel_index(k_of[stats], pos.shape)
    return _operand_view(a, plan, op)[index], index


def _operand_view(a, plan, op):
    """Operand ``op`` (``a``) as one strided view of shape
    ``(*kept_sizes, *red_sizes)`` in plan order."""
    flat = _flat(a)
    if a.dtype == np.float16:
        flat = flat.view(np.float16)
    item = a.dtype.itemsize
    strides = np.concatenate([plan.kept_strides[op], plan.red_strides[op]]) * item
    return as_strided(flat[int(plan.bases[op]):],
                      tuple(int(n) for n in np.concatenate([plan.kept_sizes, plan.red_sizes])),
                      tuple(int(t) for t in strides))


def _refit(x, y, plan, eps, rms, c, var, inv, weight_of, bias_of):
    """The statistics a fused forward left NaN, and their ``y``: NaN where a
    value is inf/NaN (the mean as NumPy's), else — the sums overflowed —
    recomputed by :func:`nbnorm._extremes.scaled_moments` and ``y = (x −
    c)·invstd·weight + bias`` written from them (``weight_of(s)``/
    ``bias_of(s)``: statistic ``s``'s parameters, scalars or per element)."""
    bad = np.flatnonzero(np.isnan(var))
    xs, index = _stats_of(x, plan, bad)
    xs = xs.reshape(bad.size, plan.n).astype(np.float64)
    y_view = _operand_view(y, plan, 1)
    with np.errstate(all="ignore"):
        c[bad] = 0.0 if rms else xs.mean(axis=1)
        inv[bad] = np.nan
        y_view[index] = np.nan
        for j in np.flatnonzero(np.isfinite(xs).all(axis=1)):
            s = bad[j]
            _, mean, m2 = _extremes.scaled_moments(xs[j])
            c[s] = 0.0 if rms else mean
            var[s] = m2 / plan.n + (mean * mean if rms else 0.0)
            inv[s] = _welford.invstd_of(var[s], eps)
            y_s = (xs[j] - _centre(c[s], inv[s])) * inv[s] * weight_of(s) + bias_of(s)
            y_view[tuple(i[j] for i in index)] = y_s.reshape(y_view.shape[len(index):])


def _centre(mean, alpha):
    """The value subtracted from ``x`` before scaling by ``alpha``: the mean,
    or 0 where ``alpha`` is 0 (an infinite variance), so that ``x − mean``,
    which can overflow only then, never makes ``inf·0 = NaN``: y is bias."""
    return np.where(alpha == 0, 0.0, mean)


def _raw_state(x, plan, skipna):
    """Per-statistic ``(count, mean, mean_lo, M2)`` in float64, flat C-order
    statistic arrays; with ``skipna`` of the non-NaN values (mean NaN where
    there are none), else of all ``plan.n``.  The kernels work relative to a
    pivot per statistic, added back here as ``mean + mean_lo`` (the rounded
    sum and its error)."""
    pc, mean_rel, m2, pivots = _relative_moments(x, plan, skipna)
    count, mean, lo = (np.empty(plan.n_stats) for _ in range(3))
    absolute_state(pc, mean_rel, pivots, float(plan.n), count, mean, lo)
    return count, mean, lo, m2


def _dual_sums(dy, x, plan, mu, args=None, split=None, signed_zeros=False):
    """``(Σ dy, Σ dy·(x − mu))`` per statistic of a plan over ``(dy, x)``
    (float64, flat C-order statistic arrays; ``mu`` per statistic).  With
    ``signed_zeros`` and one chunk, that chunk's sums as they are: a zero sum
    may then be −0.0 where adding the chunks gives +0.0, which a caller that
    adds the sums to +0.0 itself does not see."""
    args = _kernel_args(plan, [0, 1]) if args is None else args
    dyf, xf = _flat(dy), _flat(x)
    tile, chunk, n_chunks = _split(plan) if split is None else split
    p1 = np.empty((n_chunks, plan.n_stats))
    p2 = np.empty((n_chunks, plan.n_stats))
    if plan.inner_kept:
        K.dual_sums_inner_kept(dyf, xf, args, mu, tile, chunk, n_chunks, p1, p2)
    else:
        K.dual_sums_inner_reduced(dyf, xf, args, mu, chunk, n_chunks, p1, p2)
    if signed_zeros and n_chunks == 1:
        return p1[0], p2[0]
    s1 = np.empty(plan.n_stats)
    s2 = np.empty(plan.n_stats)
    K.merge_sums(p1, p2, s1, s2)
    return s1, s2


def _affine(out, u, v, axis, cu, ca, cv, cb, cc):
    """``out = (u − cu)·ca + (v − cv)·cb + cc`` per statistic; with ``v``
    None only the first term (``cv``, ``cb`` are then ignored)."""
    _affine_prepared(out, u, v, _plan(u.shape, axis, u, out, u if v is None else v),
                     cu, ca, cv, cb, cc)


def _affine_prepared(out, u, v, plan, cu, ca, cv, cb, cc):
    """:func:`_affine` with its plan over ``(u, out, v or u)`` made already."""
    q, chunk, n_chunks = _affine_args(plan)
    args = (_flat(out), _flat(u), None if v is None else _flat(v), q, chunk, n_chunks,
            cu, ca, cv, cb, cc, _memory.streamed(out))
    if not K.affine(*args, None):
        K.affine(*args, True)   # some statistic needs float64 (compiled on demand)


@lru_cache(maxsize=256)
def _affine_args(plan):
    return (_order_args(plan, (1, 0, 2)),) + _chunking(1, int(plan.order_sizes.prod()))
