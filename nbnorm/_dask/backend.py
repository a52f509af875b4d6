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
   of that chunk's statistics (the backward: ``(Σdy, Σdy·(x − mean))`` in
   float64);
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
"""
from __future__ import annotations

import itertools
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
from .._layout import stat_shape

name = "dask"

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
        return obj
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
    return a.astype(dtype)


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
    return tuple(_router.backend_of(fields[1]).merge_states(fields[:4], fields[4:]))


def _block_variance(count, m2, ddof):
    var, short = _router.backend_of(m2).state_variance(count, m2, ddof)
    if short:
        warnings.warn("nbnorm: degrees of freedom <= 0 for some statistics; their variance "
                      "is NaN", RuntimeWarning, stacklevel=2)
    return var


def _divide(m2, dof, dtype):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (m2 / max(dof, 0)).astype(dtype)


def _invstd(var, eps, dtype):
    with np.errstate(divide="ignore"):
        return _welford.invstd_of(var, eps).astype(dtype)


def _keepdims(a, sshape):
    return None if a is None else a.reshape(sshape)


def _block_inference(xb, mean, var, weight, bias, axis, eps):
    if xb.size == 0:
        return xb.copy()
    sshape = stat_shape(xb.shape, axis)
    be = _router.backend_of(xb)
    return be.inference(xb, *(_keepdims(s, sshape) for s in (mean, var, weight, bias)),
                        axis, eps, None)


def _chunk_sums(dyb, xb, mub, axis):
    """``(Σdy, Σdy·(x − mean))`` of one chunk in float64 (NumPy sums; the
    mean rounded to the statistics' dtype first, as the CPU backward)."""
    mu = mub.astype(stat_dtype(xb.dtype)).astype(F64)
    dy = dyb.astype(F64)
    return dy.sum(axis=axis), (dy * (xb.astype(F64) - mu)).sum(axis=axis)


def _add_all(parts):
    s1, s2 = parts[0]
    for a, b in parts[1:]:
        s1, s2 = s1 + a, s2 + b
    return s1, s2


def _block_dx(dyb, xb, mub, invb, wb, s1b, s2b, n, training):
    """``dx = dy·a + (x − mean)·b + c`` with ``_welford.backward_coefficients``
    (statistic blocks broadcast in keepdims shape)."""
    inv = invb.astype(F64)
    w = 1.0 if wb is None else wb.astype(F64)
    a, b, c = _welford.backward_coefficients(n, inv, w, s1b, s2b, training)
    dx = dyb.astype(F64) * a
    if training:
        mu = mub.astype(stat_dtype(xb.dtype)).astype(F64)
        dx = dx + (xb.astype(F64) - mu) * b + c
    return dx.astype(dyb.dtype)


# ------------------------------------------------------------------ helpers
def _keep(s, x, axis):
    """Statistic-shaped ``s`` (NumPy or Dask; None passes) as a Dask array in
    keepdims shape, chunked as ``x`` along the kept axes."""
    if s is None:
        return None
    idx = tuple(None if d in axis else slice(None) for d in range(x.ndim))
    chunks = tuple((1,) if d in axis else x.chunks[d] for d in range(x.ndim))
    if _router.is_dask_array(s):
        return s[idx].rechunk(chunks)
    return da.from_array(np.asarray(s)[idx], chunks=chunks)


def _n(x, axis):
    return prod(x.shape[d] for d in axis)


def _normalize(x, mean, var, weight, bias, axis, eps):
    """``y`` blockwise: each chunk through its backend's ``inference`` with
    the statistics' blocks of the same kept indices."""
    stats = [_keep(s, x, axis) for s in (mean, var, weight, bias)]
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
    return tuple(_tree(states, x, axis, _merge_all, STATE_FIELDS, "nbnorm-moments", token,
                       split_every))


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
    return tuple(merged.map_blocks(operator.getitem, j, dtype=dt, meta=_meta(arrays[1], nd, dt))
                 for j, dt in enumerate(STATE_FIELDS))


def state_variance(count, m2, ddof):
    """Lazy ``m2/(count − ddof)`` (NaN where ``count − ddof ≤ 0``).  Whether
    that happens is not known before computing: the flag returned is False
    and the computation itself raises the ``RuntimeWarning``."""
    var = da.map_blocks(_block_variance, count, m2, ddof, dtype=F64, meta=_meta(m2, m2.ndim, F64))
    return var, False


def moments(x, axis, ddof):
    """Lazy ``(mean, var)`` in :func:`stat_dtype` (``var = m2/(n − ddof)``)."""
    sd = stat_dtype(x.dtype)
    _, mean, m2, _ = moment_state(x, axis, False)
    var = m2.map_blocks(_divide, _n(x, axis) - ddof, sd, dtype=sd, meta=_meta(m2, m2.ndim, sd))
    return mean.astype(sd), var


def forward(x, weight, bias, axis, eps, out):
    """Lazy training forward ``(y, mean, biased var, invstd)``: the statistics
    are a tree reduction, ``y`` a blockwise pass that uses them."""
    sd = stat_dtype(x.dtype)
    _, mean, m2, _ = moment_state(x, axis, False)
    var = m2.map_blocks(_divide, _n(x, axis), F64, dtype=F64, meta=_meta(m2, m2.ndim, F64))
    invstd = var.map_blocks(_invstd, eps, sd, dtype=sd, meta=_meta(var, var.ndim, sd))
    y = _normalize(x, mean, var, weight, bias, axis, eps)
    return y, mean.astype(sd), var.astype(sd), invstd


def forward_with_running(x, weight, bias, axis, eps, out):
    """Training forward whose statistics are needed now (running statistics
    are updated in place): one ``dask.compute`` of the state's mean and m2
    (small: statistic-sized), then ``y`` lazily from those values, so ``x``
    is reduced once.  Returns ``(y, mean, var, invstd)`` with NumPy
    statistics (wrapped into Dask arrays by the API)."""
    sd = stat_dtype(x.dtype)
    _, mean, m2, _ = moment_state(x, axis, False)
    mean, m2 = dask.compute(mean, m2)
    mean, m2 = np.asarray(mean, F64), np.asarray(m2, F64)
    var = m2 / _n(x, axis)
    with np.errstate(divide="ignore"):
        invstd = _welford.invstd_of(var, eps)
    y = _normalize(x, mean, var, weight, bias, axis, eps)
    return y, mean.astype(sd), var.astype(sd), invstd.astype(sd)


def inference(x, mean, var, weight, bias, axis, eps, out):
    """Lazy ``y = (x − mean)/√(var + eps)·weight + bias``: blockwise, no reduction."""
    return _normalize(x, mean, var, weight, bias, axis, eps)


def backward(dy, x, mean, invstd, weight, axis, training, out):
    """Lazy ``(dx, dweight, dbias)``: one tree reduction of
    ``(Σdy, Σdy·(x − mean))`` per statistic (float64 chunk sums), then a
    blockwise ``dx`` with ``_welford.backward_coefficients``."""
    sd = stat_dtype(x.dtype)
    n = _n(x, axis)
    inds = tuple(range(x.ndim))
    _, (dy, x) = da.core.unify_chunks(dy, inds, x, inds)   # one block grid for both
    mu = _keep(mean, x, axis)
    token = tokenize(dy, x, mu, axis)
    sums = _blocks(_chunk_sums, x, dy, x, mu, prefix="nbnorm-bsums", token=token, axis=axis)
    s_dy, s_dyxmu = _tree(sums, x, axis, _add_all, (F64, F64), "nbnorm-backward", token)
    inv = _keep(invstd, x, axis)
    w = _keep(weight, x, axis)
    args = [dy, x if training else None, mu if training else None, inv, w,
            _keep(s_dy, x, axis) if training else None,
            _keep(s_dyxmu, x, axis) if training else None]
    pairs = []
    for a in args:
        pairs += [a, None if a is None else inds]
    dx = da.blockwise(_block_dx, inds, *pairs, n=n, training=bool(training),
                      name=f"nbnorm-dx-{tokenize(token, training, w, inv)}", dtype=x.dtype,
                      meta=x._meta)
    inv_stat = invstd if _router.is_dask_array(invstd) else np.asarray(invstd, F64)
    dweight = (s_dyxmu * inv_stat.astype(F64)).astype(sd)
    return dx, dweight, s_dy.astype(sd)


def update_running(running, batch, momentum, scale):
    """The CPU rule on the (computed) batch statistic."""
    if _router.is_dask_array(batch):
        batch = batch.compute()
    return _cpu().update_running(running, np.asarray(batch), momentum, scale)
