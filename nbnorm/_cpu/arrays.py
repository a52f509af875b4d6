"""The CPU backend's arrays: arguments read as NumPy arrays (converted only
where they must be), in-place targets checked, flat views of any strides,
statistic-shaped parameters as float64 vectors, and outputs allocated (large
ones from :mod:`nbnorm._pool`, pages faulted in memory order).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import _layout, _pool
from . import kernels as K

TOUCH_BYTES = 8 << 20     # fresh outputs from this size on get their pages faulted in order


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


def narrowed(a, dtype):
    """A fresh flat float64 vector ``a`` in ``dtype``: ``a`` itself for
    float64, else rounded as :func:`astype` rounds (cheaper for short
    vectors than ``astype`` under ``np.errstate``)."""
    if dtype == _F64:
        return a
    out = np.empty(a.size, dtype)
    K.narrow(a, out)
    return out


_F64 = np.dtype(np.float64)


def _flat(a):
    """1-D view of ``a``'s memory from its lowest address (float16 → uint16 bits)."""
    if a.dtype.char == "e":         # float16
        a = a.view(np.uint16)
    if a.flags.c_contiguous:
        return a.ravel()            # a view
    strides = _layout.element_strides(a, "array")
    span, _ = _layout.flat_extent(a.shape, strides)
    if span == 0:
        return np.empty(0, a.dtype)
    lo = a[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in a.strides)]
    return as_strided(lo, shape=(span,), strides=(a.dtype.itemsize,))


def _stat_vector(a, n_stats, fill, dtype=np.float64):
    """A statistic-shaped parameter as a flat vector in ``dtype`` (float64
    unless given; ``fill`` if None)."""
    if a is None:
        return np.full(n_stats, fill, dtype)
    return np.ascontiguousarray(a, dtype=dtype).reshape(n_stats)


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
