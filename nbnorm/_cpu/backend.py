"""CPU backend: NumPy arrays in and out, Numba kernels in between.

Receives validated arrays from :mod:`nbnorm._api`, builds the
:class:`~nbnorm._layout.Plan`, picks the kernel shape and the chunking, and
allocates outputs.  No full-size temporary is created: ``x``/``dy`` are read
in place through flat views, outputs are written in place.
"""
from __future__ import annotations

from functools import lru_cache, wraps

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import _extremes, _layout, _pool, _welford
from . import _memory, _threads
from . import kernels as K

name = "cpu"

MIN_ITEMS = 64            # work items to aim for (load balance across threads)
MIN_CHUNK = 32768         # fewest elements a chunk of one statistic may hold
FUSE_BYTES = 4 << 20      # per-statistic footprint up to which passes are fused
TOUCH_BYTES = 8 << 20     # fresh outputs from this size on get their pages faulted in order
SERIAL_ELEMENTS = 1 << 17 # below this, one thread: waking others costs more than it saves


def _refuse_masked(obj, argname):
    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError(f"{argname}: masked arrays are not supported (the mask would be ignored); "
                        f"pass a plain array, e.g. {argname}.filled(np.nan) or its valid entries")


def asarray(obj, argname):
    """An argument that is read, as a NumPy array in native byte order.

    Arrays are used in place (subclasses such as ``np.matrix`` as their base
    ndarray); array-likes go through ``np.asarray`` (a tensor that requires
    grad is read through ``.detach()``, no copy); byte-swapped data, and
    data whose strides are not whole elements, is converted once; masked
    arrays are refused (their mask would be ignored).
    """
    _refuse_masked(obj, argname)
    if getattr(obj, "requires_grad", False) and callable(getattr(obj, "detach", None)):
        obj = obj.detach()
    try:
        a = np.asarray(obj)
    except Exception as e:  # an object NumPy cannot read: name the argument
        raise TypeError(f"{argname}: expected an array, got {type(obj).__name__} that NumPy "
                        f"cannot read ({type(e).__name__}: {e})") from None
    if type(a) is not np.ndarray:
        a = a.view(np.ndarray)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    elif any(s % a.itemsize for s in a.strides):
        a = np.ascontiguousarray(a)     # strides of no whole element (a packed record field)
    return a


def target(obj, argname):
    """An argument written in place: it must be a NumPy array (any byte order)."""
    _refuse_masked(obj, argname)
    if not isinstance(obj, np.ndarray):
        raise TypeError(f"{argname}: expected a NumPy array (it is written in place), got "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    return obj if type(obj) is np.ndarray else obj.view(np.ndarray)


def wrap(result, like):
    """Results are NumPy arrays already."""
    return result


def astype(a, dtype):
    """``a`` converted to ``dtype`` (integer input to ``moments``, float64
    statistics to float32: beyond its range they become inf, silently)."""
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=dtype)


# ------------------------------------------------------------------ helpers
def _flat(a):
    """1-D view of ``a``'s memory from its lowest address (float16 → uint16 bits)."""
    if a.dtype == np.float16:
        a = a.view(np.uint16)
    if a.flags.c_contiguous:
        return a.reshape(-1)
    strides = _layout.element_strides(a, "array")
    span, _ = _layout.flat_extent(a.shape, strides)
    if span == 0:
        return np.empty(0, a.dtype)
    lo = a[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in a.strides)]
    return as_strided(lo, shape=(span,), strides=(a.dtype.itemsize,))


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


stat_dtype = _welford.stat_dtype    # one definition for every backend


def _fusable(plan, itemsize, n_inputs):
    return (not plan.inner_kept and plan.n_stats >= MIN_ITEMS
            and plan.n * itemsize * n_inputs <= FUSE_BYTES)


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
    pc, mean, m2, pivots = _relative_moments(x, plan, skipna)
    mean, lo = _welford.two_sum(pivots, mean)   # NumPy arithmetic: not reassociated
    if not skipna:
        return np.full(plan.n_stats, float(plan.n)), mean, np.where(np.isfinite(mean), lo, 0.0), m2
    count = pc.sum(axis=0)
    lo = np.where(np.isfinite(mean) & (count > 0), lo, 0.0)
    mean[count == 0] = np.nan   # (counts are integers below 2⁵³: exact)
    return count, mean, lo, m2


def _dual_sums(dy, x, plan, mu, args=None, split=None):
    """``(Σ dy, Σ dy·(x − mu))`` per statistic of a plan over ``(dy, x)``
    (float64, flat C-order statistic arrays; ``mu`` per statistic)."""
    args = _kernel_args(plan, [0, 1]) if args is None else args
    dyf, xf = _flat(dy), _flat(x)
    tile, chunk, n_chunks = _split(plan) if split is None else split
    p1 = np.empty((n_chunks, plan.n_stats))
    p2 = np.empty((n_chunks, plan.n_stats))
    if plan.inner_kept:
        K.dual_sums_inner_kept(dyf, xf, args, mu, tile, chunk, n_chunks, p1, p2)
    else:
        K.dual_sums_inner_reduced(dyf, xf, args, mu, chunk, n_chunks, p1, p2)
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
    K.affine(_flat(out), _flat(u), None if v is None else _flat(v), q, chunk, n_chunks,
             cu, ca, cv, cb, cc, _memory.streamed(out))


@lru_cache(maxsize=256)
def _affine_args(plan):
    return (_order_args(plan, (1, 0, 2)),) + _chunking(1, int(plan.order_sizes.prod()))


def _stat_vector(a, n_stats, fill):
    """A statistic-shaped parameter as a flat float64 vector (``fill`` if None)."""
    if a is None:
        return np.full(n_stats, fill)
    return np.ascontiguousarray(a, dtype=np.float64).reshape(n_stats)


def _fresh_block(nbytes):
    block = np.empty(nbytes, np.uint8)
    K.touch_pages(block, 4096)
    return block


def empty_like(x):
    """Output of ``x``'s shape, dtype and memory order.  Large ones come from
    the pool of :mod:`nbnorm._pool` (pages already mapped) or, when it has
    none, have their pages faulted in order (see ``kernels.touch_pages``)."""
    y = _pool.empty_like(x, _fresh_block)
    if y is None:
        y = np.empty_like(x, order="K")
        if y.nbytes >= TOUCH_BYTES:
            K.touch_pages(_flat(y).view(np.uint8), 4096)
    return y


def _sized(fn):
    """Decorate an operation so that small problems run on the calling thread
    (see :mod:`._threads` for the other cases that run serially)."""
    @wraps(fn)
    def wrapper(*args):
        work = args[0].size * (2 if fn.__name__ == "backward" else 1)
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


from . import ops as _ops  # noqa: E402  (batch norm's operations, prepared)
from .ops import (prepare_backward, prepare_forward, prepare_inference,  # noqa: E402,F401
                  prepare_moments, update_running)
from .family import (norm_backward, norm_forward, prepare_norm_backward,  # noqa: E402,F401
                     prepare_norm_forward)  # (the family's operations)
