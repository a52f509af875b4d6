"""Argument checks shared by every public function and backend.

Each check raises before anything is computed or written, with a message
that names the argument, what was expected and what was given:
``TypeError`` for unsupported types or dtypes, ``ValueError`` for shapes and
values, ``numpy.exceptions.AxisError`` for axes (see ``_layout``).
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_NAMES = ", ".join(str(d) for d in FLOAT_DTYPES)


def float_input(a, name, *, allow_int=False):
    """Check that ``a`` holds float16/32/64 (or int/bool when ``allow_int``),
    in either byte order."""
    dt = np.dtype(a.dtype)
    if dt.newbyteorder("=") in FLOAT_DTYPES:
        return
    if allow_int and (dt.kind in "iub"):
        return
    extra = ", an integer or bool" if allow_int else ""
    raise TypeError(f"{name}: unsupported dtype {dt}; expected one of {_NAMES}{extra}")


def same_dtype(a, name, dtype, ref_name):
    """``a`` must share ``dtype`` with ``ref_name`` (a ``TypeError`` otherwise)."""
    if np.dtype(a.dtype) != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} (that of {ref_name}), got {np.dtype(a.dtype)}")


def shape_is(a, name, shape, what):
    """``a.shape`` must equal ``shape``; ``what`` explains where it comes from."""
    got = tuple(a.shape)
    if got != tuple(shape):
        if any(s != s for s in shape):          # NaN: a Dask x of unknown chunk sizes
            raise ValueError(f"{name}: x has unknown chunk sizes along an axis that {name} "
                             f"must match ({what}: {tuple(shape)}); call "
                             f"x.compute_chunk_sizes() first, or pass a Dask {name} chunked "
                             f"like x")
        raise ValueError(f"{name}: expected shape {tuple(shape)} ({what}), got {got}")


def stat_array(a, name, shape, axis):
    """A per-statistic array (weight, bias, mean, var, invstd, running stats)."""
    if a is None:
        return
    float_input(a, name)
    shape_is(a, name, shape, f"x.shape without axis {axis}")


def writable(a, name):
    """``a`` must be writeable (``out=`` and the running statistics) and its
    elements must not overlap one another: threads would race on an element
    that two indices share, and ``out=x`` would transform it twice."""
    flags = getattr(a, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        raise ValueError(f"{name}: the array is read-only; it is written in place")
    view = _address_view(a)
    if view is not None and self_overlapping(view):
        raise ValueError(f"{name}: its elements overlap in memory (a zero or overlapping "
                         f"stride, e.g. a broadcast or as_strided view, strides "
                         f"{tuple(view.strides)}); it is written in place, so every element "
                         f"needs memory of its own: pass a copy (np.array({name}))")


#: the largest array whose element addresses :func:`self_overlapping` lists
#: when the stride test cannot decide; a larger undecided one counts as overlapping
EXACT_ELEMENTS = 1 << 22


def self_overlapping(a):
    """Whether two elements of ``a`` share a byte of memory.

    Sorted by stride magnitude, an array whose every stride spans all
    elements of the smaller dimensions (``|s_k| ≥ itemsize + Σ_{j<k}
    |s_j|·(n_j − 1)``) cannot overlap itself; a dimension of two or more
    elements with stride 0 always does.  Other layouts (rare: interleaved
    strides) are decided by listing the element addresses, up to
    ``EXACT_ELEMENTS``."""
    dims = sorted((abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1)
    if not dims or a.size == 0:
        return False
    span = a.itemsize
    for stride, n in dims:
        if stride == 0:
            return True
        if stride < span:
            break
        span += stride * (n - 1)
    else:
        return False
    if a.size > EXACT_ELEMENTS:
        return True
    starts = np.zeros(1, np.int64)
    for stride, n in dims:
        starts = (starts[:, None] + stride * np.arange(n, dtype=np.int64)).reshape(-1)
    starts.sort()
    return bool((np.diff(starts) < a.itemsize).any())


def out_array(out, x, name="out"):
    """``out`` must match ``x`` in shape and dtype (any byte order) and be writeable."""
    if out is None:
        return
    shape_is(out, name, x.shape, "that of x")
    if np.dtype(out.dtype).newbyteorder("=") != np.dtype(x.dtype).newbyteorder("="):
        raise ValueError(f"{name}: expected dtype {np.dtype(x.dtype)} (that of x), got {np.dtype(out.dtype)}")
    writable(out, name)


def _address_view(a):
    """A host ndarray with ``a``'s addresses, shape and strides, for overlap
    arithmetic only (never read): ``a`` itself for NumPy arrays, a view built
    from ``__cuda_array_interface__`` for device arrays, None if unknown."""
    if isinstance(a, np.ndarray):
        return a
    try:
        iface = a.__cuda_array_interface__
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    holder = _AddressOnly()
    holder.__array_interface__ = {k: iface[k] for k in ("shape", "typestr", "data", "strides")
                                  if k in iface} | {"version": 3}
    return np.asarray(holder)


class _AddressOnly:
    """Carries an ``__array_interface__`` for :func:`_address_view`."""


def _same_view(a, b):
    """Same first address, shape, strides and item size: an exact alias."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides and a.itemsize == b.itemsize)


def _overlap(a, b):
    """Whether two arrays share a byte of memory, decided exactly (interleaved
    views such as ``z.real``/``z.imag`` do not); True where that is too hard
    to decide, so that a race is never let through."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 20))
    except np.exceptions.TooHardError:
        return True


def no_aliasing(outputs, inputs, exact_ok=()):
    """Each array written in place (``outputs``: name → array or None) must
    share no memory with any other argument (``inputs`` and the other
    outputs), except that the pairs ``(output, input)`` in ``exact_ok`` may
    be the very same view (``out=x`` for in-place use)."""
    views = {k: _address_view(v) for k, v in {**inputs, **outputs}.items() if v is not None}
    views = {k: v for k, v in views.items() if v is not None}
    names = list(views)
    for oname in outputs:
        if oname not in views:
            continue
        for other in names:
            if other == oname or (other in outputs and names.index(other) < names.index(oname)):
                continue
            o, a = views[oname], views[other]
            if not _overlap(o, a):
                continue
            if (oname, other) in exact_ok and _same_view(o, a):
                continue
            allowed = [i for (n, i) in exact_ok if n == oname]
            hint = f"; it may only be {' or '.join(allowed)} itself" if allowed else ""
            raise ValueError(f"{oname}: shares memory with {other}; pass arrays that do not "
                             f"overlap{hint}")


def real_scalar(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__} {v!r}")
    return float(v)


def eps_value(eps):
    eps = real_scalar(eps, "eps")
    if not (eps >= 0.0 and np.isfinite(eps)):
        raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
    return eps


def momentum_value(momentum):
    m = real_scalar(momentum, "momentum")
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
    return m


def ddof_value(ddof):
    return real_scalar(ddof, "ddof")
