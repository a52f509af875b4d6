"""Prepared calls: a call's signature is resolved once, then only launched.

Whether a call on exact ``np.ndarray`` arguments is valid, which backend
runs it, with which normalized arguments, plan, kernels and buffer sizes,
follow from its *signature* alone (:func:`signature`): the function, the
shape, strides, dtype and writability of every array argument (or its
absence) and the scalar arguments (exact ``int``/``float``/``bool``/
``None``/``tuple`` of ``int``: ``0.0 == 0`` cannot stand in for an int; a
float by its bits, so ``-0.0`` is not ``0.0``).  The first call with a
signature validates everything and builds a *prepared call* (as a oneDNN
primitive or a cuDNN plan); :class:`CallMemo` keeps it, and the next call
with that signature only checks what a signature cannot vouch for — that
no output shares memory with another argument (addresses) — and launches.
That is most of the cost of a call on a small array (tens of µs of
routing and validation), and it matters after a large kernel has flushed
the caches: the Python that routes and validates then runs about twenty
times slower than warm.

Only calls that convert no argument and warn about nothing at validation
are remembered; the memo holds at most ``SIZE`` signatures (the oldest is
dropped), never an array, and :func:`nbnorm.release_memory` empties it.
"""
from __future__ import annotations

import os
import threading

import numpy as np

SIZE = 256


class CallMemo:
    """A bounded map from call signatures to resolved calls (thread-safe)."""

    def __init__(self, size=SIZE):
        self._size = size
        self._calls = {}
        # re-entrant: a signal handler or finalizer may call release_memory()
        # while this thread is inside put(); a forked child gets a fresh lock
        # (another thread of the parent may have held this one)
        self._lock = threading.RLock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self):
        self._lock = threading.RLock()

    def get(self, key):
        """The call remembered for ``key`` (None: none, or ``key`` None)."""
        return self._calls.get(key)

    def put(self, key, call):
        with self._lock:
            if key not in self._calls and len(self._calls) >= self._size:
                del self._calls[next(iter(self._calls))]
            self._calls[key] = call

    def clear(self):
        with self._lock:
            self._calls.clear()

    def __len__(self):
        return len(self._calls)


def signature(fname, arrays, scalars):
    """The signature of a call of ``fname`` (see the module's docstring), or
    None when it has none: an array argument that is not an exact
    ``np.ndarray`` (or None), or a scalar of another type."""
    key = [fname]
    for a in arrays:
        if a is None:
            key.append(None)
        elif type(a) is np.ndarray:
            key.append((a.shape, a.strides, a.dtype, a.flags.writeable))
        else:
            return None
    for v in scalars:
        t = type(v)
        if t is float:
            key.append(v.hex())
        elif t is int or t is bool or v is None:
            key.append((t, v))
        elif t is tuple and all(type(e) is int for e in v):
            key.append(v)
        else:
            return None
    return tuple(key)


def moments_key(x, axis, ddof, keepdims, skipna):
    """The signature of a ``moments`` call, or None when it has none: ``x``
    not an exact ``np.ndarray``, ``axis`` not None/int/tuple of ints,
    ``ddof`` not an int, ``keepdims`` not a bool, or ``skipna`` set."""
    if (type(x) is not np.ndarray or type(ddof) is not int or type(keepdims) is not bool
            or skipna is not False):
        return None
    if axis is not None and type(axis) is not int:
        if type(axis) is not tuple or not all(type(a) is int for a in axis):
            return None
    return (x.shape, x.strides, x.dtype, axis, ddof, keepdims)


calls = CallMemo()
moments_calls = calls     # the one memo (the name moments used first)


def prepared_op(backend, op, *args, fallback):
    """``run`` of ``backend.prepare_<op>(*args)`` where the backend implements
    :class:`nbnorm._contract.Prepared` (``PreparedFamily`` for ``norm_*``),
    else ``fallback`` (which runs
    ``backend.<op>`` on every call)."""
    from ._contract import Prepared, PreparedFamily, implements
    if implements(backend, PreparedFamily if op.startswith("norm_") else Prepared):
        return getattr(backend, "prepare_" + op)(*args)
    return fallback


def aliasing_check(names, outputs, exact_ok, full):
    """A check of one call's arrays (in ``names`` order) that no output shares
    memory with another argument: a bounds test per pair (the very same
    object passes where ``exact_ok`` allows it), and ``full(arrays)``, the
    exact check that names the arguments, where bounds overlap or an
    argument is not a NumPy array."""
    others = {}
    for i, n in enumerate(names):
        if n in outputs:
            others[i] = tuple((j, (n, names[j]) in exact_ok) for j in range(len(names))
                              if j != i and not (names[j] in outputs and j < i))
    per_output = tuple(others.items())
    # the C function itself, without NumPy's dispatch wrapper (its bounds test)
    may_share = getattr(np.may_share_memory, "_implementation", np.may_share_memory)
    ndarray = np.ndarray

    def check(arrays):
        for i, pairs in per_output:
            o = arrays[i]
            if o is None:
                continue
            exact = type(o) is ndarray
            for j, same_ok in pairs:
                a = arrays[j]
                if a is None or (same_ok and o is a):
                    continue
                if not exact or type(a) is not ndarray or may_share(o, a):
                    return full(arrays)
    return check
