"""Typed element access for the CPU kernels.

Numba's CPU target has no float16 type, so float16 arrays reach the kernels
as their raw ``uint16`` bits (a zero-copy ``view``) and are converted here:
``load`` returns float32 for float16/float32 storage and float64 for float64;
``store`` rounds to the storage type (round-to-nearest-even for float16).
``acc_zero`` is the block accumulator: float32 for 16/32-bit storage,
float64 for float64.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._cache import lock_saves


@intrinsic
def _f32_bits(typingctx, x):
    """Reinterpret a float32 as uint32."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, u):
    """Reinterpret the low 32 bits of an integer as float32."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if u.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif u.bitwidth < 32:
            v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def window(typingctx, a, off, m):
    """``a[off:off + m]`` of a 1-D C-contiguous array, without reference
    counting (the view's meminfo is NULL), for hot loops in parallel kernels:
    slicing would increment one shared atomic counter from every thread.
    The caller guarantees ``0 <= off`` and ``off + m <= a.size``."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"):
        return None
    view = a.copy(layout="C")

    def codegen(context, builder, sig, args):
        ary, o, n = args
        src = context.make_array(a)(context, builder, ary)
        dst = context.make_array(view)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(a.dtype)))
        context.populate_array(
            dst,
            data=builder.gep(src.data, [o]),
            shape=cgutils.pack_array(builder, [n]),
            strides=cgutils.pack_array(builder, [itemsize]),
            itemsize=itemsize,
            meminfo=None,
        )
        return dst._getvalue()

    return view(a, types.intp, types.intp), codegen


_MAGIC = np.uint32((254 - 15) << 23)          # 2**112: rebias exponent 15 → 127
_WAS_INFNAN = np.uint32((127 + 16) << 23)     # 2**16: at or above it the half was inf/nan
_F16_MAX = np.uint32((127 + 16) << 23)
_F32_INF = np.uint32(255 << 23)
_DENORM_MAGIC = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)


@njit(cache=True, fastmath=False, forceinline=False)
def half_to_float(h):
    """IEEE binary16 bits → float32 (exact, subnormals/inf/nan included)."""
    h = np.uint32(h)
    o = _bits_f32((h & np.uint32(0x7FFF)) << np.uint32(13)) * _bits_f32(_MAGIC)
    u = _f32_bits(o)
    if o >= _bits_f32(_WAS_INFNAN):
        u |= np.uint32(255 << 23)
    return _bits_f32(u | ((h & np.uint32(0x8000)) << np.uint32(16)))


@njit(cache=True, fastmath=False, forceinline=False)
def float_to_half(f):
    """float32 → IEEE binary16 bits, rounding to nearest even."""
    u = _f32_bits(np.float32(f))
    sign = u & np.uint32(0x80000000)
    u ^= sign
    if u >= _F16_MAX:
        o = np.uint32(0x7E00) if u > _F32_INF else np.uint32(0x7C00)
    elif u < np.uint32(113 << 23):
        o = _f32_bits(_bits_f32(u) + _bits_f32(_DENORM_MAGIC)) - _DENORM_MAGIC
    else:
        odd = (u >> np.uint32(13)) & np.uint32(1)
        u += np.uint32(((15 - 127) << 23) & 0xFFFFFFFF) + np.uint32(0xFFF) + odd
        o = u >> np.uint32(13)
    return np.uint16(o | (sign >> np.uint32(16)))


lock_saves(half_to_float)       # this directory's saves go under a lock (nbnorm._cache)


def load(a, i):
    """``a[i]`` as a float (float32 for float16 bits)."""


def store(a, i, v):
    """``a[i] = v``, rounded to ``a``'s storage type."""


def acc_zero(a):
    """Zero of the block-accumulator type for storage ``a``."""


def acc_cast(a, v):
    """``v`` converted to the block-accumulator type for storage ``a``."""


@overload(load, inline="always")
def _load(a, i):
    if a.dtype == types.uint16:
        return lambda a, i: half_to_float(a[i])
    return lambda a, i: a[i]


@overload(store, inline="always")
def _store(a, i, v):
    if a.dtype == types.uint16:
        def impl(a, i, v):
            a[i] = float_to_half(np.float32(v))
        return impl
    def impl(a, i, v):
        a[i] = v
    return impl


@overload(acc_zero, inline="always")
def _acc_zero(a):
    if a.dtype == types.float64:
        return lambda a: np.float64(0.0)
    return lambda a: np.float32(0.0)


@overload(acc_cast, inline="always")
def _acc_cast(a, v):
    if a.dtype == types.float64:
        return lambda a, v: np.float64(v)
    return lambda a, v: np.float32(v)


def maybe_window(a, off, m):
    """:func:`window` of ``a``, or None when ``a`` is None."""


def plus_term(v, i, cv, cb, cc):
    """``(v[i] − cv)·cb + cc``, or ``cc`` when ``v`` is None (decided at compile
    time, so a missing second input costs nothing)."""


@overload(maybe_window, inline="always")
def _maybe_window(a, off, m):
    if isinstance(a, types.NoneType):
        return lambda a, off, m: None
    return lambda a, off, m: window(a, off, m)


@overload(plus_term, inline="always")
def _plus_term(v, i, cv, cb, cc):
    if isinstance(v, types.NoneType):
        return lambda v, i, cv, cb, cc: cc
    return lambda v, i, cv, cb, cc: (load(v, i) - cv) * cb + cc


def unowned(a):
    """``a`` itself, or None; see :func:`_unowned`."""


@intrinsic
def _unowned_array(typingctx, a):
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        src = context.make_array(a)(context, builder, args[0])
        dst = context.make_array(a)(context, builder)
        context.populate_array(dst, data=src.data, shape=src.shape, strides=src.strides,
                               itemsize=src.itemsize, meminfo=None)
        return dst._getvalue()

    return a(a), codegen


@overload(unowned, inline="always")
def _unowned(a):
    """The array ``a`` without its reference count (meminfo NULL), for the
    operands of parallel kernels: Numba increments and decrements the count
    of every array it passes to a callee that is not inlined, an atomic
    operation on a counter every thread shares (measured: ~50 ns per call of
    a range walker with four operands).  The caller keeps ``a`` alive for
    the call; nothing derived from it may outlive the kernel."""
    if isinstance(a, types.Array):
        return lambda a: _unowned_array(a)
    if isinstance(a, types.BaseTuple):
        return _TUPLES[len(a)]
    return lambda a: a


def _tuple_of(n):
    body = ", ".join(f"unowned(a[{i}])" for i in range(n))
    scope = {"unowned": unowned}
    exec(f"def each(a):\n    return ({body}{',' if n == 1 else ''})", scope)
    return scope["each"]


_TUPLES = [_tuple_of(n) for n in range(12)]
