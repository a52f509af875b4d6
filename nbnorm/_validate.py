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
    """Check that ``a`` holds float16/32/64 (or int/bool when ``allow_int``)."""
    dt = np.dtype(a.dtype)
    if dt in FLOAT_DTYPES:
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
        raise ValueError(f"{name}: expected shape {tuple(shape)} ({what}), got {got}")


def stat_array(a, name, shape, axis):
    """A per-statistic array (weight, bias, mean, var, invstd, running stats)."""
    if a is None:
        return
    float_input(a, name)
    shape_is(a, name, shape, f"x.shape without axis {axis}")


def writable(a, name):
    """``a`` must be writeable (``out=`` and the running statistics)."""
    flags = getattr(a, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        raise ValueError(f"{name}: the array is read-only; it is written in place")


def out_array(out, x, name="out"):
    """``out`` must match ``x`` in shape and dtype, be writeable, and not
    partially overlap ``x`` (it may be ``x`` itself, for in-place use)."""
    if out is None:
        return
    shape_is(out, name, x.shape, "that of x")
    if np.dtype(out.dtype) != np.dtype(x.dtype):
        raise ValueError(f"{name}: expected dtype {np.dtype(x.dtype)} (that of x), got {np.dtype(out.dtype)}")
    writable(out, name)


def no_partial_overlap(out, name, *inputs):
    """``out`` may be one of ``inputs`` exactly (same memory, same strides) or
    disjoint from all of them; anything in between would race."""
    if out is None or not isinstance(out, np.ndarray):
        return
    for inp in inputs:
        if inp is None or not isinstance(inp, np.ndarray):
            continue
        if np.may_share_memory(out, inp):
            same = (out.__array_interface__["data"][0] == inp.__array_interface__["data"][0]
                    and out.strides == inp.strides)
            if not same:
                raise ValueError(f"{name}: overlaps an input with a different layout; "
                                 "pass a separate array or the input itself")


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
