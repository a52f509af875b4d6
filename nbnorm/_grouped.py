"""Statistics per group of a labelled axis (``by=``): climatologies and
standardized anomalies by month, season, station.

One integer label per index of the labelled axis (the first entry of
``axis``); negative labels are left out (pandas' and flox's codes).  The
axis is cut into *runs* of equal labels (daily data by month: one run per
month of each year) and each run, a view of ``x`` (no copy), is reduced by
:meth:`Moments.of` — one exact pass over every element — and the runs of a
group merged by Chan's formula; where labels change so often that runs
would be many and short, each group is gathered first (one copy) where the
backend's array module can (``take``: NumPy, Dask; on CUDA arrays each run
is reduced on the device as it is).  Results have a leading dimension of
the sorted distinct non-negative labels.  Every backend has an array module
for this (:attr:`nbnorm._contract.Backend.array_module`; CUDA's computes
the small per-group arrays on the host, :mod:`nbnorm._cuda.array_module`).
"""
from __future__ import annotations

import importlib
import operator
from functools import reduce

import numpy as np

from . import _router
from ._layout import normalize_axis, stat_shape
from ._moments import Moments


def labelled_axis(axis, ndim):
    """``(labelled axis, all reduced axes)``: the labelled one is ``axis`` or
    its first entry, as given."""
    if axis is None:
        raise ValueError("axis: with by, expected the labelled axis (an int, or a tuple "
                         "whose first entry is the labelled axis), got None")
    first = axis[0] if isinstance(axis, (tuple, list)) and len(axis) else axis
    return normalize_axis(first, ndim)[0], normalize_axis(axis, ndim)


def labels_of(by, length, axis):
    """``by`` as a 1-D int64 NumPy array of ``length`` labels."""
    try:
        lab = np.asarray(by)
    except Exception as e:
        raise TypeError(f"by: expected an array of integer labels, got {type(by).__name__} "
                        f"({type(e).__name__}: {e})") from None
    if lab.dtype.kind not in "iu":
        raise TypeError(f"by: expected integer labels (one per index of axis {axis}), got "
                        f"dtype {lab.dtype}")
    if lab.ndim != 1 or lab.shape[0] != length:
        raise ValueError(f"by: expected {length} labels (one per index of axis {axis}), got "
                         f"shape {lab.shape}")
    return lab.astype(np.int64)


def array_module(backend):
    """The module whose ``stack`` and ``zeros`` work on the backend's arrays
    (:attr:`nbnorm._contract.Backend.array_module`), with ``to_host`` and
    ``from_host`` where its arrays do no arithmetic (CUDA's), else
    ``sqrt``, ``concatenate`` and ``full_like``."""
    return importlib.import_module(backend.array_module)


def runs(labels):
    """``[(start, stop, label)]``: the maximal runs of equal labels."""
    if labels.size == 0:
        return []
    cut = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [labels.size]])
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, stops)]


def _take(x, a, start, stop):
    return x[(slice(None),) * a + (slice(start, stop),)]


def grouped_states(xp, x, axis, by, skipna):
    """``(groups, [Moments per group])`` of ``x`` (a backend array) over the
    reduced axes, per distinct non-negative label of ``by``."""
    a, ax = labelled_axis(axis, x.ndim)
    lab = labels_of(by, x.shape[a], a)
    groups = np.unique(lab[lab >= 0])
    pieces = [r for r in runs(lab) if r[2] >= 0]
    states = {g: [] for g in groups.tolist()}
    if len(pieces) > 8 * max(len(groups), 1) + 64 and hasattr(xp, "take"):
        for g in groups.tolist():          # many short runs: gather each group
            idx = np.flatnonzero(lab == g)
            states[g].append(Moments.of(xp.take(x, idx, axis=a), ax, skipna=skipna))
    else:
        for start, stop, g in pieces:
            states[g].append(Moments.of(_take(x, a, start, stop), ax, skipna=skipna))
    return groups, [reduce(operator.add, states[g]) for g in groups.tolist()], a, ax, lab


def stack_states(xp, states, backend, like):
    """One :class:`Moments` with a leading group dimension."""
    fields = [xp.stack([getattr(s, f) for s in states]) if states else None
              for f in ("_count", "_mean", "_m2", "_mean_lo")]
    return Moments(*fields, _backend=backend, _like=like if backend.wrap_reads_like else None)


def _coefficients(xp, state, ddof, eps):
    """``(hi, var, −lo·α)`` of a group's state (mean ``hi + lo``, ``α =
    1/√(var + eps)``), computed on the host where the array module's arrays
    do no arithmetic (one value per kept index: small)."""
    var = state.var(ddof)
    on_host = getattr(xp, "to_host", None)
    lo = state._mean_lo if on_host is None else on_host(state._mean_lo)
    v = var if on_host is None else on_host(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 / (np if on_host else xp).sqrt(v + eps)
    bias = -(lo * alpha)
    return state._mean, var, bias if on_host is None else xp.from_host(bias)


def standardize_groups(xp, x, states, groups, a, ax, lab, ddof, eps, out, inference):
    """``z`` of every element by its group's statistics (NaN where the label
    is negative): per run, ``(x − hi)·α − lo·α`` with the group's mean
    ``hi + lo`` and ``α = 1/√(var + eps)``."""
    coef = {g: _coefficients(xp, s, ddof, eps) for g, s in zip(groups.tolist(), states)}
    if out is None and xp is np:     # one output, written run by run (no concatenation),
        out = _router.load("cpu").empty_like(x)     # from the pool of large outputs
    elif out is None and hasattr(xp, "output_like"):
        out = xp.output_like(x)
    parts = []
    for start, stop, g in runs(lab):
        xs = _take(x, a, start, stop)
        os_ = None if out is None else _take(out, a, start, stop)
        if g < 0:
            if os_ is not None:
                os_[...] = np.nan
            else:
                parts.append(xp.full_like(xs, np.nan))
            continue
        mean, var, bias = coef[g]
        parts.append(inference(xs, mean, var, None, bias, axis=ax, eps=eps, out=os_))
    if out is not None:
        return out
    if not parts:
        return xp.empty_like(x)
    return xp.concatenate(parts, axis=a)


# ------------------------------------------------------------------ the API's entries
def _setup(fname, x):
    """``(backend, array module, x as the backend's float array)``: the
    checks and the integer promotion of the functions without ``by``."""
    from . import _validate as V
    from ._api import _setup as route
    backend, _, xa = route(fname, x)
    V.float_input(xa, "x", allow_int=True)
    xp = array_module(backend)
    if np.dtype(xa.dtype).kind in "iub":
        xa = backend.astype(xa, np.float64)
    return backend, xp, xa


def moments(x, axis, ddof, keepdims, skipna, by):
    """:func:`nbnorm.moments` with ``by``: ``(mean, var)`` with a leading
    group dimension."""
    from . import _validate as V
    ddof = V.ddof_value(ddof)
    if keepdims:
        raise ValueError("keepdims: not supported with by (the statistics have a leading "
                         "group dimension instead of the labelled axis)")
    backend, xp, xa = _setup("moments", x)
    _, states, _, ax, _ = grouped_states(xp, xa, axis, by, bool(skipna))
    sd = backend.stat_dtype(xa.dtype)
    if not states:
        empty = xp.zeros((0,) + stat_shape(xa.shape, ax), sd)
        return backend.wrap(empty, x), backend.wrap(empty.copy(), x)
    mean = xp.stack([backend.astype(s._mean, sd) for s in states])
    var = xp.stack([backend.astype(s.var(ddof), sd) for s in states])
    return backend.wrap(mean, x), backend.wrap(var, x)


def moment_states(x, axis, skipna, by):
    """:meth:`nbnorm.Moments.of` with ``by``: grouped states."""
    backend, xp, xa = _setup("Moments.of", x)
    _, states, _, ax, _ = grouped_states(xp, xa, axis, by, bool(skipna))
    if not states:
        shape = (0,) + stat_shape(xa.shape, ax)
        return Moments(xp.zeros(shape, np.int64), xp.zeros(shape), xp.zeros(shape),
                       xp.zeros(shape), _backend=backend)
    return stack_states(xp, states, backend, x)


def standardize(x, axis, ddof, eps, skipna, out, by):
    """:func:`nbnorm.standardize` with ``by``: every element by its own
    group's statistics, NaN where its label is negative."""
    from . import _validate as V
    from ._api import batch_norm_inference
    ddof = V.ddof_value(ddof)
    eps = V.eps_value(eps)
    backend, xp, xa = _setup("standardize", x)
    target = None
    if out is not None:      # checked whole before any run writes into it
        target = backend.target(out, "out")
        V.out_array(target, xa)
        V.no_aliasing({"out": target}, {"x": xa}, exact_ok=(("out", "x"),))
    groups, states, a, ax, lab = grouped_states(xp, xa, axis, by, bool(skipna))
    z = standardize_groups(xp, xa, states, groups, a, ax, lab, ddof, eps, target,
                           batch_norm_inference)
    return out if out is not None else backend.wrap(z, x)
