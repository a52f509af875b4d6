"""The normalization family (layer, group, instance, RMS norm) on Dask arrays:
lazy in, lazy out, each chunk on the backend of its own type.

A statistic of the family needs all of its values at once (its ``y`` uses
its own mean), so ``x`` is rechunked to hold every reduced axis whole — for
layer/RMS norm the normalized axes, for group/instance norm every axis but
the batch — and each chunk then runs the chunk backend's ``norm_forward`` /
``norm_backward`` (a view of the geometry for the chunk's shape).  Chunks
along the kept axes (the batch, tokens) stay as they are; the statistics
come out chunked as those axes.  The backward's parameter gradients are
per-chunk partial sums, added in float64 by Dask.  Parameters (``weight``,
``bias``) are small: Dask ones are computed when the call is made.
"""
from __future__ import annotations

import dataclasses
import itertools
import operator

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .. import _router
from .._welford import stat_dtype

F64 = np.dtype(np.float64)


def _host(a):
    """A parameter as a NumPy array (a Dask one computed: it is small)."""
    if a is None:
        return None
    return np.asarray(a.compute()) if _router.is_dask_array(a) else np.asarray(a)


def _original(geo, v):
    """The axis of ``x`` that axis ``v`` of the geometry's view comes from."""
    return v if geo.split < 0 or v <= geo.split else v - 1


def _whole_axes(geo):
    """Axes of ``x`` a chunk must hold whole: those any reduced view axis
    comes from (the channel axis of group norm included)."""
    return sorted({_original(geo, v) for v in geo.axis})


def _stat_dims(geo):
    """For each statistic dimension, the axis of ``x`` it comes from, or None
    where it lies in a whole axis (group norm's G)."""
    whole = set(_whole_axes(geo))
    kept = [v for v in range(len(geo.view_shape)) if v not in geo.axis]
    return [None if _original(geo, v) in whole else _original(geo, v) for v in kept]


def _chunk_geometry(geo, shape):
    """``geo`` for a chunk of shape ``shape`` (smaller only along kept axes,
    whose parameter strides are 0)."""
    shape = tuple(shape)
    if geo.split < 0:
        view = shape
    else:
        c = geo.split
        view = shape[:c] + (geo.groups, shape[c] // geo.groups) + shape[c + 1:]
    stat = tuple(n for v, n in enumerate(view) if v not in geo.axis)
    return dataclasses.replace(geo, shape=shape, view_shape=view, stat_shape=stat)


def _on(be, block, a):
    """A host parameter for the chunk's backend (device chunks get a device copy)."""
    if a is None or isinstance(block, np.ndarray):
        return a
    from_host = getattr(be, "from_host", None)
    return a if from_host is None else from_host(a)


def _block_forward(xb, geo, weight, bias, eps, rms):
    be = _router.backend_of(xb)
    return tuple(be.norm_forward(xb, _chunk_geometry(geo, xb.shape), _on(be, xb, weight),
                                 _on(be, xb, bias), eps, rms, None))


def _block_backward(dyb, xb, cb, ib, geo, weight, rms):
    be = _router.backend_of(xb)
    return tuple(be.norm_backward(dyb, xb, _on(be, xb, cb), _on(be, xb, ib),
                                  _chunk_geometry(geo, xb.shape), _on(be, xb, weight), rms, None))


def _stat_chunks(geo, xr):
    return tuple((geo.view_shape[v],) if o is None else xr.chunks[o]
                 for v, o in zip([v for v in range(len(geo.view_shape)) if v not in geo.axis],
                                 _stat_dims(geo)))


def _field(parts, xr, geo, j, dtype, name):
    """Field ``j`` of the tuple blocks of ``parts``: statistic-shaped, chunked
    as ``x``'s kept axes."""
    dims = _stat_dims(geo)
    nb = xr.numblocks
    layer = {}
    for sidx in itertools.product(*(range(1) if o is None else range(nb[o]) for o in dims)):
        full = [0] * xr.ndim
        for o, i in zip(dims, sidx):
            if o is not None:
                full[o] = i
        layer[(name, *sidx)] = (operator.getitem, (parts.name, *full), j)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[parts])
    return da.Array(graph, name, _stat_chunks(geo, xr), dtype=dtype,
                    meta=np.empty((0,) * len(dims), dtype))


def _y(parts, xr, j, dtype, name):
    return parts.map_blocks(operator.getitem, j, dtype=dtype, meta=xr._meta, name=name)


def norm_forward(x, geo, weight, bias, eps, rms, out):
    """Lazy ``(y, c, var, invstd)`` (see :class:`nbnorm._contract.NormFamily`)."""
    xr = x.rechunk({a: -1 for a in _whole_axes(geo)})
    w, b = _host(weight), _host(bias)
    token = tokenize(xr, geo, w, b, eps, rms)
    inds = tuple(range(x.ndim))
    parts = da.blockwise(_block_forward, inds, xr, inds, geo=geo, weight=w, bias=b, eps=eps,
                         rms=bool(rms), name=f"nbnorm-norm-{token}", meta=xr._meta)
    sd = stat_dtype(x.dtype)
    return (_y(parts, xr, 0, x.dtype, f"nbnorm-norm-y-{token}"),
            _field(parts, xr, geo, 1, sd, f"nbnorm-norm-c-{token}"),
            _field(parts, xr, geo, 2, F64, f"nbnorm-norm-var-{token}"),
            _field(parts, xr, geo, 3, sd, f"nbnorm-norm-inv-{token}"))


def _stats_like(s, geo, xr):
    """A statistic (NumPy or Dask) chunked as the statistics of ``xr``."""
    chunks = _stat_chunks(geo, xr)
    if _router.is_dask_array(s):
        return s.rechunk(chunks)
    return da.from_array(np.asarray(s), chunks=chunks, name=False)


def norm_backward(dy, x, centre, invstd, geo, weight, rms, out):
    """Lazy ``(dx, dweight, dbias)``; the parameter gradients are the float64
    sums of the chunks' partial ones, in the statistics' dtype."""
    whole = {a: -1 for a in _whole_axes(geo)}
    inds = tuple(range(x.ndim))
    _, (dyr, xr) = da.core.unify_chunks(dy.rechunk(whole), inds, x.rechunk(whole), inds)
    stat_inds = tuple(inds[o] if o is not None else x.ndim + i
                      for i, o in enumerate(_stat_dims(geo)))
    w = _host(weight)
    inv = _stats_like(invstd, geo, xr)
    c = None if centre is None else _stats_like(centre, geo, xr)
    token = tokenize(dyr, xr, c, inv, geo, w, rms)
    parts = da.blockwise(_block_backward, inds, dyr, inds, xr, inds,
                         c, None if c is None else stat_inds, inv, stat_inds,
                         geo=geo, weight=w, rms=bool(rms), name=f"nbnorm-normb-{token}",
                         meta=xr._meta, concatenate=True)
    dx = _y(parts, xr, 0, x.dtype, f"nbnorm-normb-dx-{token}")
    sd = stat_dtype(x.dtype)
    grads = []
    blocks = list(itertools.product(*map(range, xr.numblocks)))
    for j, what in ((1, "dw"), (2, "db")):
        name = f"nbnorm-normb-{what}-{token}"
        zeros = (0,) * len(geo.param_shape)
        layer = {(name, i, *zeros): (_as_f64_row, (operator.getitem, (parts.name, *idx), j))
                 for i, idx in enumerate(blocks)}
        graph = HighLevelGraph.from_collections(name, layer, dependencies=[parts])
        stacked = da.Array(graph, name, ((1,) * len(blocks),) + tuple(
            (n,) for n in geo.param_shape), dtype=F64,
            meta=np.empty((0,) * (1 + len(geo.param_shape)), F64))
        grads.append(stacked.sum(axis=0).astype(sd))
    return dx, grads[0], grads[1]


def _as_f64_row(a):
    """A chunk's partial gradient (host or device) as a float64 NumPy row."""
    if not isinstance(a, np.ndarray):
        a = a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
    return np.asarray(a, F64)[None]
