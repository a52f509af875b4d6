"""Dask backend: ``dask.array.Array`` in, lazy ``dask.array.Array`` out.

Nothing is computed when a function is called, except the batch statistics
of a training forward that updates running statistics (one ``dask.compute``
of the statistics alone; see :func:`forward_with_running`).  Every chunk is
handled by the backend of the chunk's own type (:func:`nbnorm._router.backend_of`:
NumPy chunks → the CPU kernels, device chunks → CUDA), so this module only
builds graphs.

Reductions are a tree of merges of per-chunk states, with any chunking
along kept and reduced axes and no rechunking:

1. one task per chunk of ``x`` (a ``blockwise`` layer whose blocks are
   tuples): the chunk backend's ``moment_state`` → ``(count, mean, m2, mean_lo)``
   of that chunk's statistics (the backward: the chunk backend's
   ``backward_sums``, ``(Σdy, Σdy·(x − mean))`` in float64, added up the
   tree; then each chunk's ``dx`` by its ``backward_apply``);
2. a tree along the reduced axes: each task merges up to ``split_every``
   neighbouring states (per reduced axis, ``split_every**(1/len(axis))`` of
   them, as ``dask.array.reduction`` does) with the chunk backend's
   ``merge_states`` (Chan's formula) until one state per chunk of kept
   axes is left;
3. one small ``getitem`` layer per field, so ``count``, ``mean`` and ``m2``
   are three Dask arrays (chunked as the kept axes of ``x``) that share the
   tree: computing them together reduces ``x`` once.

``split_every`` is Dask's own setting: ``dask.config.set(split_every=8)``
(an int, the fan-in of one merge task, or a dict ``{axis: fan-in}``);
default 4, as Dask's reductions.

Unknown chunk sizes (``np.nan``, e.g. after boolean indexing ``x[mask]``)
along reduced axes are supported: wherever the number ``n`` of elements per
statistic is needed (``var = m2/n``, ``ddof``, the backward's ``Σdy/n``, the
running variance's ``n/(n − 1)``) it is the states' ``count``, computed in
the graph, not ``x.shape``.  Along kept axes the statistics get unknown
chunks too (Dask statistics of the same chunking work; NumPy ones of a known
shape cannot be matched).  Where the graph cannot be built (chunks that
cannot be aligned without their sizes) a ``ValueError`` naming
``compute_chunk_sizes()`` is raised at call time.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import math
import operator
import warnings
from math import prod

import dask
import dask.array as da
import numpy as np
from dask.array.utils import meta_from_array
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from .. import _router, _welford
from .._contract import ChunkBackward, implements
from .._layout import stat_shape

name = "dask"
remembers_calls = False     # see nbnorm._contract.Backend
wrap_reads_like = False
array_module = "dask.array"

F64 = np.dtype(np.float64)
I64 = np.dtype(np.int64)
STATE_FIELDS = (I64, F64, F64, F64)    # count, mean, m2, mean_lo (see nbnorm.Moments)


def _cpu():
    return _router.load("cpu")


# ------------------------------------------------------------------ conversion
def asarray(obj, argname):
    """Dask arrays as they are; host arguments (NumPy weights, statistics)
    through the CPU backend's conversion; a host ``x``/``dy`` becomes a
    one-chunk Dask array."""
    if _router.is_dask_array(obj):
        return _one_nan(obj)
    a = _cpu().asarray(obj, argname)
    if argname in ("x", "dy"):
        return da.from_array(a, chunks=a.shape)
    return a


def target(obj, argname):
    """Arguments written in place: ``out`` cannot be (Dask arrays are
    immutable); the running statistics are NumPy arrays (CPU rules)."""
    if argname == "out":
        raise TypeError("out: not supported with Dask input: Dask arrays are immutable, so "
                        "out= could never be written; use the returned (lazy) array, e.g. "
                        "y.store(target) to write it into an existing array")
    return _cpu().target(obj, argname)


def wrap(result, like):
    """Results are Dask arrays; host results (the statistics a forward with
    running statistics computed) become one-chunk Dask arrays."""
    if _router.is_dask_array(result):
        return result
    return da.from_array(result, chunks=np.shape(result))


def astype(a, dtype):
    return _one_nan(a.astype(dtype))


# ------------------------------------------------------------------ unknown chunk sizes
_COMPUTE_SIZES = "call x.compute_chunk_sizes() first"


def _unknown(sizes):
    return any(math.isnan(s) for s in sizes)


def _one_nan(a):
    """``a`` with every unknown size in ``a.shape`` the one object ``np.nan``.

    Dask sums the chunks into ``shape``, so each array has its own NaN
    objects, and two shapes with unknown sizes never compare equal: the API's
    shape checks (``dy`` against ``x``, a Dask ``mean`` of unknown length
    against ``x``'s statistic shape) would refuse arrays of one and the same
    chunking.  With one NaN object, unknown compares equal to unknown (tuple
    comparison tests identity first), and the sizes are checked block by
    block when computing.  A new ``Array`` on the same graph (the caller's is
    not touched); nothing is done where ``shape`` is not a cached property."""
    shape = a.shape
    if not _unknown(shape) or all(s is np.nan for s in shape if math.isnan(s)):
        return a
    if not isinstance(inspect.getattr_static(type(a), "shape", None), functools.cached_property):
        return a        # pragma: no cover  (another Dask: shapes stay as they are)
    b = da.Array(a.dask, a.name, a.chunks, meta=a._meta)
    b.__dict__["shape"] = tuple(np.nan if math.isnan(d) else d for d in shape)
    return b


def _same_chunks(a, b):
    """Chunk tuples equal, an unknown size matching an unknown size."""
    return len(a) == len(b) and all(
        u == v or (math.isnan(u) and math.isnan(v)) for u, v in zip(a, b))


def _known_n(x, axis):
    """Elements per statistic from ``x.shape``, or None where a reduced axis
    has unknown chunk sizes (then it is the states' ``count``)."""
    n = prod(x.shape[d] for d in axis)
    return None if math.isnan(n) else n


def _too_few(count):
    """The training check of the API (``n ≥ 2``) on counts known only now."""
    c = np.asarray(count)
    if c.size and c.min() < 2:
        raise ValueError(
            f"x: expected more than 1 value per statistic when training, got {int(c.min())} "
            f"(x has unknown chunk sizes along the reduced axes, so this is only checked when "
            f"computing; {_COMPUTE_SIZES} to have it checked at call time)")


def _check_stat_blocks(xb, axis, name, *blocks):
    """Statistic blocks (keepdims) must match ``xb`` along the kept axes:
    with unknown chunk sizes that is only known now, and NumPy would
    broadcast a block of length 1 silently."""
    for b in blocks:
        if b is None:
            continue
        if any(b.shape[d] != xb.shape[d] for d in range(xb.ndim) if d not in axis):
            raise ValueError(
                f"{name}: a chunk of the statistics has shape {tuple(b.shape)} but x's chunk "
                f"has {tuple(xb.shape)} along the kept axes; statistics with unknown chunk "
                f"sizes must come from an array chunked as x ({_COMPUTE_SIZES})")


stat_dtype = _welford.stat_dtype    # one definition for every backend


def sqrt(a):
    return da.sqrt(a)


def _meta(like, ndim, dtype):
    return meta_from_array(getattr(like, "_meta", np.empty(0)), ndim=ndim, dtype=dtype)


# ------------------------------------------------------------------ the tree
def _split(axis, ndim, split_every):
    """Fan-in per reduced axis (``dask.array.reduction``'s rule)."""
    se = split_every if split_every is not None else dask.config.get("split_every", None)
    se = se or 4
    if isinstance(se, dict):
        per = {k % ndim: v for k, v in se.items()}
        return {a: max(int(per.get(a, 2)), 2) for a in axis}
    n = max(int(se ** (1 / (len(axis) or 1))), 2)
    return dict.fromkeys(axis, n)


def _tree(states, like, axis, combine, fields, prefix, token, split_every=None):
    """Merge the tuple blocks of ``states`` (``like``'s block grid) along
    ``axis`` with ``combine`` (a list of tuples → one tuple), then split the
    final tuples into one Dask array per ``fields`` entry (``dtype``), of
    the statistic shape, chunked as ``like``'s kept axes."""
    ndim = like.ndim
    nb = states.numblocks
    split = _split(axis, ndim, split_every)
    kept = [d for d in range(ndim) if d not in axis]
    layers = dict(states.dask.layers)
    deps = dict(states.dask.dependencies)
    tree_name = f"{prefix}-merge-{token}"
    tree = {}
    cur, cur_nb, level = states.name, nb, 0
    while any(cur_nb[a] > 1 for a in axis):
        new = f"{tree_name}-{level}"
        new_nb = tuple(-(-n // split[d]) if d in axis else n for d, n in enumerate(cur_nb))
        for idx in itertools.product(*map(range, new_nb)):
            ranges = [range(i * split[d], min((i + 1) * split[d], cur_nb[d])) if d in axis
                      else (i,) for d, i in enumerate(idx)]
            tree[(new, *idx)] = (combine, [(cur, *m) for m in itertools.product(*ranges)])
        cur, cur_nb, level = new, new_nb, level + 1
    last = states.name
    if tree:
        layers[tree_name] = MaterializedLayer(tree)
        deps[tree_name] = {states.name}
        last = tree_name
    chunks = tuple(states.chunks[d] for d in kept)
    outs = []
    for j, dt in enumerate(fields):
        oname = f"{prefix}-{j}-{token}"
        layer = {}
        for kidx in itertools.product(*(range(nb[d]) for d in kept)):
            full = [0] * ndim
            for d, i in zip(kept, kidx):
                full[d] = i
            layer[(oname, *kidx)] = (operator.getitem, (cur, *full), j)
        graph = HighLevelGraph({**layers, oname: MaterializedLayer(layer)},
                               {**deps, oname: {last}})
        outs.append(da.Array(graph, oname, chunks, meta=_meta(like, len(kept), dt)))
    return outs


def _blocks(func, like, *args, prefix, token, **kwargs):
    """A ``blockwise`` layer over ``like``'s block grid whose blocks are
    whatever ``func`` returns (tuples: no meta is computed)."""
    inds = tuple(range(like.ndim))
    pairs = []
    for a in args:
        pairs += [a, None if a is None else inds]
    return da.blockwise(func, inds, *pairs, name=f"{prefix}-{token}",
                        meta=_meta(like, like.ndim, F64), **kwargs)


# ------------------------------------------------------------------ chunk tasks
def _chunk_state(block, axis, skipna):
    return tuple(_router.backend_of(block).moment_state(block, axis, skipna))


def _merge_all(states):
    acc = states[0]
    be = _router.backend_of(acc[1])
    for s in states[1:]:
        acc = be.merge_states(acc, s)
    return acc


def _merge_pair(*fields):
    """Merge the state ``fields[:4]`` with ``fields[4:]`` by their backend."""
    if np.shape(fields[1]) != np.shape(fields[5]):
        raise ValueError(f"Moments.merge: chunks of shapes {np.shape(fields[1])} and "
                         f"{np.shape(fields[5])} (states of unknown chunk sizes must be "
                         f"chunked alike; {_COMPUTE_SIZES})")
    return tuple(_router.backend_of(fields[1]).merge_states(fields[:4], fields[4:]))


_SHORT = "nbnorm: degrees of freedom <= 0 for some statistics; their variance is NaN"


def _block_variance(count, m2, ddof, warn):
    var, short = _router.backend_of(m2).state_variance(count, m2, ddof)
    if short and warn:
        warnings.warn(_SHORT, RuntimeWarning, stacklevel=2)
    return var


def _shown(message, category):
    """Whether ``warnings.warn(message, category)`` would be shown (or
    raised) under the warning filters in force now (the probe leaves no
    trace in the registry of ``"once"`` warnings)."""
    once = dict(warnings.onceregistry)
    try:
        with warnings.catch_warnings(record=True) as seen:
            try:
                warnings.warn(message, category)
            except category:
                return True
        return bool(seen)
    finally:
        warnings.onceregistry.clear()
        warnings.onceregistry.update(once)


def _divide(m2, dof, dtype):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (m2 / max(dof, 0)).astype(dtype)


def _invstd(var, eps, dtype):
    with np.errstate(divide="ignore"):
        return _welford.invstd_of(var, eps).astype(dtype)


def _keepdims(a, sshape):
    return None if a is None else a.reshape(sshape)


def _block_inference(xb, mean, var, weight, bias, axis, eps):
    _check_stat_blocks(xb, axis, "mean/var/weight/bias", mean, var, weight, bias)
    if xb.size == 0:
        return xb.copy()
    sshape = stat_shape(xb.shape, axis)
    be = _router.backend_of(xb)
    return be.inference(xb, *(_keepdims(s, sshape) for s in (mean, var, weight, bias)),
                        axis, eps, None)


def _chunk_backend(block):
    """The backend of a chunk's own type, which must run the backward in
    its two passes (:class:`nbnorm._contract.ChunkBackward`)."""
    be = _router.backend_of(block)
    if not implements(be, ChunkBackward):
        raise NotImplementedError(f"batch_norm_backward: the {be.name} backend cannot run the "
                                  f"backward of a chunk ({type(block).__name__}) of a Dask array")
    return be


def _chunk_sums(dyb, xb, mub, axis, counted=False):
    """``(Σdy, Σdy·(x − mean))`` of one chunk, float64, by the chunk's own
    backend (``backward_sums``); with ``counted``, also the chunk's number of
    elements per statistic (int64), for ``n`` where the chunk sizes were
    unknown."""
    _check_dy(dyb, xb)
    _check_stat_blocks(xb, axis, "mean", mub)
    sums = tuple(_chunk_backend(xb).backward_sums(dyb, xb, mub, axis))
    if counted:
        n = prod(xb.shape[d] for d in axis)
        sums += (np.full(sums[0].shape, n, I64),)
    return sums


def _check_dy(dyb, xb):
    if dyb.shape != xb.shape:
        raise ValueError(f"dy: a chunk of shape {tuple(dyb.shape)} where x's has "
                         f"{tuple(xb.shape)}; with unknown chunk sizes dy must be chunked as "
                         f"x (call x.compute_chunk_sizes() and dy.compute_chunk_sizes() first)")


def _add_all(parts):
    acc = parts[0]
    for p in parts[1:]:
        acc = tuple(u + v for u, v in zip(acc, p))
    return acc


def _block_dx(dyb, xb, mub, invb, wb, s1b, s2b, nb, n, training, axis):
    """One chunk's ``dx`` by its own backend (``backward_apply``) from the
    statistics' total sums (blocks in keepdims shape); ``n`` the elements per
    statistic, or None: then the block ``nb`` of counts."""
    if xb is not None:
        _check_dy(dyb, xb)
    _check_stat_blocks(dyb, axis, "mean/invstd/weight", invb, wb, mub, s1b, s2b, nb)
    if n is None:
        n = nb if training else 1.0
    return _chunk_backend(dyb).backward_apply(dyb, xb, mub, invb, wb, s1b, s2b, n, axis,
                                              training)


# ------------------------------------------------------------------ helpers
def _keep(s, x, axis, name="statistics"):
    """Statistic-shaped ``s`` (NumPy or Dask; None passes) as a Dask array in
    keepdims shape, chunked as ``x`` along the kept axes.  Chunks of unknown
    size cannot be rechunked: a Dask ``s`` must then already be chunked as
    ``x`` (as the statistics computed from ``x`` are)."""
    if s is None:
        return None
    idx = tuple(None if d in axis else slice(None) for d in range(x.ndim))
    chunks = tuple((1,) if d in axis else x.chunks[d] for d in range(x.ndim))
    if _router.is_dask_array(s):
        s = s[idx]
        if all(_same_chunks(a, b) for a, b in zip(s.chunks, chunks)):
            return s
    kept = [d for d in range(x.ndim) if d not in axis]
    have = tuple(s.chunks[d] for d in kept) if _router.is_dask_array(s) else None
    if any(_unknown(x.chunks[d]) for d in kept) or (have and any(map(_unknown, have))):
        got = "a NumPy array" if have is None else f"chunked {have}"
        raise ValueError(
            f"{name}: {got} along the statistic's axes, but x is chunked "
            f"{tuple(x.chunks[d] for d in kept)} there, with unknown chunk sizes, so they "
            f"cannot be aligned; {_COMPUTE_SIZES}, or pass statistics computed from x")
    if _router.is_dask_array(s):
        return s.rechunk(chunks)
    return da.from_array(np.asarray(s)[idx], chunks=chunks)


def _normalize(x, mean, var, weight, bias, axis, eps):
    """``y`` blockwise: each chunk through its backend's ``inference`` with
    the statistics' blocks of the same kept indices."""
    stats = [_keep(s, x, axis, name) for s, name in
             ((mean, "mean"), (var, "var"), (weight, "weight"), (bias, "bias"))]
    inds = tuple(range(x.ndim))
    pairs = []
    for s in stats:
        pairs += [s, None if s is None else inds]
    token = tokenize(x, *stats, axis, eps)
    return da.blockwise(_block_inference, inds, x, inds, *pairs, axis=axis, eps=eps,
                        name=f"nbnorm-normalize-{token}", dtype=x.dtype, meta=x._meta)


# ------------------------------------------------------------------ operations
def moment_state(x, axis, skipna, split_every=None):
    """Lazy ``(count, mean, m2, mean_lo)`` (int64, float64 ×3; statistic-shaped,
    chunked as ``x``'s kept axes): one tree reduction shared by the four."""
    token = tokenize(x, axis, skipna, _split(axis, x.ndim, split_every))
    states = _blocks(_chunk_state, x, x, prefix="nbnorm-state", token=token, axis=axis,
                     skipna=bool(skipna))
    return tuple(_one_nan(a) for a in _tree(states, x, axis, _merge_all, STATE_FIELDS,
                                            "nbnorm-moments", token, split_every))


def merge_states(a, b):
    """Two lazy states merged blockwise (Chan's formula by the chunks' backend)."""
    arrays = [v if _router.is_dask_array(v) else da.from_array(np.asarray(v)) for v in (*a, *b)]
    nd = arrays[1].ndim
    inds = tuple(range(nd))
    pairs = []
    for v in arrays:
        pairs += [v, inds]
    token = tokenize(*arrays)
    merged = da.blockwise(_merge_pair, inds, *pairs, name=f"nbnorm-merge-{token}",
                          meta=_meta(arrays[1], nd, F64))
    return tuple(_one_nan(merged.map_blocks(operator.getitem, j, dtype=dt,
                                            meta=_meta(arrays[1], nd, dt)))
                 for j, dt in enumerate(STATE_FIELDS))


def state_variance(count, m2, ddof):
    """Lazy ``m2/(count − ddof)`` (NaN where ``count − ddof ≤ 0``).  Whether
    that happens is not known before computing: the flag returned is False
    and the computation itself warns (``RuntimeWarning``) — if the warning
    filters in force when the graph is *built* would show that warning
    (computed later, outside a ``warnings.catch_warnings()`` that ignored it,
    it stays quiet, as :mod:`nbnorm.xarray` needs for all-NaN land pixels)."""
    var = da.map_blocks(_block_variance, count, m2, ddof, _shown(_SHORT, RuntimeWarning),
                        dtype=F64, meta=_meta(m2, m2.ndim, F64))
    return var, False


def moments(x, axis, ddof):
    """Lazy ``(mean, var)`` in :func:`stat_dtype` (``var = m2/(n − ddof)``;
    with unknown chunk sizes along ``axis``, ``n`` is the state's count and
    ``n − ddof ≤ 0`` gives NaN with a ``RuntimeWarning`` when computing, as
    :meth:`nbnorm.Moments.var`)."""
    sd = stat_dtype(x.dtype)
    count, mean, m2, _ = moment_state(x, axis, False)
    n = _known_n(x, axis)
    if n is None:
        var = state_variance(count, m2, ddof)[0].astype(sd)
    else:
        var = m2.map_blocks(_divide, n - ddof, sd, dtype=sd, meta=_meta(m2, m2.ndim, sd))
    return mean.astype(sd), var


def _checked_mean(mean, count):
    _too_few(count)
    return mean


def _training_var(m2, count):
    _too_few(count)
    return m2 / count


def forward(x, weight, bias, axis, eps, out):
    """Lazy training forward ``(y, mean, biased var, invstd)``: the statistics
    are a tree reduction, ``y`` a blockwise pass that uses them.  With unknown
    chunk sizes along ``axis``, ``var = m2/count`` and fewer than 2 values
    per statistic raise ``ValueError`` when computing (the API checks ``n``
    at call time where ``x.shape`` knows it)."""
    sd = stat_dtype(x.dtype)
    count, mean, m2, _ = moment_state(x, axis, False)
    n = _known_n(x, axis)
    if n is None:
        mean = da.map_blocks(_checked_mean, mean, count, dtype=F64, meta=_meta(m2, m2.ndim, F64))
        var = da.map_blocks(_training_var, m2, count, dtype=F64, meta=_meta(m2, m2.ndim, F64))
    else:
        var = m2.map_blocks(_divide, n, F64, dtype=F64, meta=_meta(m2, m2.ndim, F64))
    invstd = var.map_blocks(_invstd, eps, sd, dtype=sd, meta=_meta(var, var.ndim, sd))
    y = _normalize(x, mean, var, weight, bias, axis, eps)
    return y, mean.astype(sd), var.astype(sd), invstd


def forward_with_running(x, weight, bias, axis, eps, out):
    """Training forward whose statistics are needed now (running statistics
    are updated in place): one ``dask.compute`` of the state's count, mean and
    m2 (small: statistic-sized), then ``y`` lazily from those values, so ``x``
    is reduced once.  Returns ``(y, mean, var, invstd)`` with NumPy
    statistics (wrapped into Dask arrays by the API); ``var`` carries the
    counts (:class:`_Counted`) for the running variance's ``n/(n − 1)``
    where ``x.shape`` does not know ``n``."""
    sd = stat_dtype(x.dtype)
    count, mean, m2, _ = moment_state(x, axis, False)
    count, mean, m2 = dask.compute(count, mean, m2)
    count, mean, m2 = np.asarray(count), np.asarray(mean, F64), np.asarray(m2, F64)
    _too_few(count)       # checked by the API already where x.shape knows n
    var = m2 / count
    with np.errstate(divide="ignore"):
        invstd = _welford.invstd_of(var, eps)
    y = _normalize(x, mean, var, weight, bias, axis, eps)
    var = var.astype(sd).view(_Counted)
    var.count = count
    return y, mean.astype(sd), var, invstd.astype(sd)


class _Counted(np.ndarray):
    """A computed batch variance with the per-statistic counts it was reduced
    from: :func:`update_running` takes the running variance's factor
    ``n/(n − 1)`` from them where the API's (from ``x.shape``) is NaN because
    chunk sizes were unknown."""

    count = None

    def __array_finalize__(self, obj):
        self.count = getattr(obj, "count", None)


def inference(x, mean, var, weight, bias, axis, eps, out):
    """Lazy ``y = (x − mean)/√(var + eps)·weight + bias``: blockwise, no reduction."""
    return _normalize(x, mean, var, weight, bias, axis, eps)


def backward(dy, x, mean, invstd, weight, axis, training, out):
    """Lazy ``(dx, dweight, dbias)``: one tree reduction of the chunks'
    ``(Σdy, Σdy·(x − mean))`` per statistic (their backends'
    ``backward_sums``), then a blockwise ``dx`` (their ``backward_apply``)."""
    sd = stat_dtype(x.dtype)
    n = _known_n(x, axis)
    inds = tuple(range(x.ndim))
    for d in inds:
        if not _same_chunks(dy.chunks[d], x.chunks[d]) and (
                _unknown(dy.chunks[d]) or _unknown(x.chunks[d])):
            raise ValueError(
                f"dy: chunked {dy.chunks[d]} along axis {d} but x is chunked {x.chunks[d]}, "
                f"with unknown chunk sizes, so they cannot be aligned; call "
                f"x.compute_chunk_sizes() and dy.compute_chunk_sizes() first, or build dy "
                f"with the same boolean mask as x")
    _, (dy, x) = da.core.unify_chunks(dy, inds, x, inds)   # one block grid for both
    mu = _keep(mean, x, axis, "mean")
    counted = n is None and bool(training)
    token = tokenize(dy, x, mu, axis, counted)
    sums = _blocks(_chunk_sums, x, dy, x, mu, prefix="nbnorm-bsums", token=token, axis=axis,
                   counted=counted)
    fields = (F64, F64, I64) if counted else (F64, F64)
    s_dy, s_dyxmu, *count = _tree(sums, x, axis, _add_all, fields, "nbnorm-backward", token)
    inv = _keep(invstd, x, axis, "invstd")
    w = _keep(weight, x, axis, "weight")
    args = [dy, x if training else None, mu if training else None, inv, w,
            _keep(s_dy, x, axis) if training else None,
            _keep(s_dyxmu, x, axis) if training else None,
            _keep(count[0], x, axis) if counted else None]
    pairs = []
    for a in args:
        pairs += [a, None if a is None else inds]
    dx = da.blockwise(_block_dx, inds, *pairs, n=n, training=bool(training), axis=axis,
                      name=f"nbnorm-dx-{tokenize(token, training, w, inv)}", dtype=x.dtype,
                      meta=x._meta)
    inv_stat = invstd if _router.is_dask_array(invstd) else np.asarray(invstd, F64)
    dweight = (s_dyxmu * inv_stat.astype(F64)).astype(sd)
    return dx, dweight, s_dy.astype(sd)


def update_running(running, batch, momentum, scale):
    """The CPU rule on the (computed) batch statistic.  A variance from
    :func:`forward_with_running` carries its counts: where the API's
    ``n/(n − 1)`` is NaN (``n`` unknown from ``x.shape``) they give it."""
    if _router.is_dask_array(batch):
        batch = batch.compute()
    count = getattr(batch, "count", None)
    if count is not None and not np.all(np.isfinite(scale)):
        scale = count / (count - 1.0)      # count ≥ 2: checked by forward_with_running
    return _cpu().update_running(running, np.asarray(batch), momentum, scale)
from .family import norm_backward, norm_forward  # noqa: E402,F401  (the family: lazy, per chunk)
