"""Memory hints for the CPU kernels: streaming stores for the affine pass
of large outputs, and prefetches of the next block of a reduction.

**Streaming stores.**  A normal store to a line that is not in cache first
reads the line from memory (read-for-ownership), so writing ``y`` costs a
read and a write of ``y``; a non-temporal store of a whole 64-byte line
skips the read and does not keep the line in cache.  For an output much
larger than the caches that cuts the traffic of the write in half, as
``memcpy`` does for large copies.  :func:`._runs.stream_run` writes the
elements up to the first line boundary and after the last one as
:func:`._runs.run_affine` does, and each whole line in between by
:func:`stream_line` — the same operations in the same order and types on a
vector of the line's elements (``contract`` only), so the values are
bitwise those of the normal path.  A work item that streamed ends with
:func:`store_fence`, so that its lines are ordered before anything the
thread writes next.  float16 outputs (stored as bits, converted per
element) are written normally.

**Prefetches.**  A statistic of NCHW data is 64 runs of a few KiB, far
apart: the hardware prefetchers stop at every page boundary and restart,
and a core waits on each run's first lines.  :func:`prefetch` asks for the
lines of the next block while the current one is summed, so the reduction
reads at the speed of a plain streaming read; the fused forward asks for
the next statistic, into L2 (:func:`prefetch_l2`), while it writes this one
(``_ranges.affine_range``).
"""
from __future__ import annotations

import glob
import os
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

LINE = 64   # bytes per cache line, the unit of a streaming store
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
_FLOATS = (types.float32, types.float64)


# ------------------------------------------------------- when to use them
def _stream_bytes():
    """Outputs from this size on are written with streaming stores (None:
    never): ``NBNORM_STREAM_BYTES`` (0 disables them), else 32 MiB."""
    env = os.environ.get("NBNORM_STREAM_BYTES")
    if env is None:
        return 32 << 20
    try:
        value = int(env)
    except ValueError:
        raise ValueError(f"NBNORM_STREAM_BYTES: expected a number of bytes (0 disables "
                         f"streaming stores), got {env!r}") from None
    return value if value > 0 else None


STREAM_BYTES = _stream_bytes()


def _cache_bytes(level, fallback, caches="/sys/devices/system/cpu/cpu0/cache"):
    """The size of CPU 0's cache of ``level`` from Linux's sysfs
    (``fallback`` where it cannot be read)."""
    for index in sorted(glob.glob(os.path.join(caches, "index*"))):
        try:
            with open(os.path.join(index, "level")) as f:
                if f.read().strip() != str(level):
                    continue
            with open(os.path.join(index, "size")) as f:
                text = f.read().strip()
            return int(text[:-1]) << {"K": 10, "M": 20}[text[-1]] if text[-1] in "KM" \
                else int(text)
        except (OSError, ValueError, KeyError, IndexError):
            break
    return fallback


def _l2_bytes(caches="/sys/devices/system/cpu/cpu0/cache"):
    """The level-2 cache size (1 MiB where it cannot be read)."""
    return _cache_bytes(2, 1 << 20, caches)


def _l3_bytes(caches="/sys/devices/system/cpu/cpu0/cache"):
    """The last-level (level-3) cache size (32 MiB where it cannot be read)."""
    return _cache_bytes(3, 32 << 20, caches)


L2_BYTES = _l2_bytes()
L3_BYTES = _l3_bytes()


def streamed(out):
    """The kernels' ``stream`` argument for ``out``: True when they write it
    with streaming stores (it is far larger than what the caches keep for
    the next operation anyway), else None — a type of its own, so that a
    kernel launched with None is compiled without the streaming code
    (a small problem never compiles it)."""
    return True if STREAM_BYTES is not None and out.nbytes >= STREAM_BYTES else None


def two_fit_in_l2(nbytes):
    """Whether two statistics of ``nbytes`` each fit in L2 (with a tenth to
    spare): then the fused forward prefetches the next one."""
    return 2 * nbytes <= 0.9 * L2_BYTES


# ----------------------------------------------------------- the hints
def streamable(out, u, v):
    """Whether :func:`stream_line` takes operands of these types."""
    return (isinstance(out, types.Array) and out.dtype in _FLOATS and u.dtype in _FLOATS
            and (isinstance(v, types.NoneType) or v.dtype in _FLOATS))


@intrinsic
def stream_line(typingctx, out, oo, u, ou, v, ov, cu, ca, cv, cb, cc):
    """``out[oo + i] = (u[ou + i] − cu)·ca + t`` for the ``LINE // itemsize``
    elements of one line, ``t = (v[ov + i] − cv)·cb + cc`` (``cc`` when ``v``
    is None, see ``_access.plus_term``); one aligned non-temporal store
    (``out[oo]`` must start a line: see :func:`item_aligned`).  The loads
    assume no alignment.
    Each operation is done in the type Numba gives the scalar expression
    (float64 if either side is float64, else float32), ``contract`` only."""
    if not (streamable(out, u, v) and all(c in _FLOATS for c in (cu, ca, cv, cb, cc))):
        return None
    sig = types.void(out, oo, u, ou, v, ov, cu, ca, cv, cb, cc)

    def codegen(context, builder, sig, args):
        o_arr, o_off, u_arr, u_off, v_arr, v_off, *coef = args
        out_t, _, u_t, _, v_t = sig.args[:5]
        lanes = LINE // context.get_abi_sizeof(context.get_data_type(out_t.dtype))

        def vector_type(ty):
            return ir.VectorType(context.get_data_type(ty), lanes)

        def convert(value, to):
            vec, ty = value
            if ty == to:
                return vec
            grow = to.bitwidth > ty.bitwidth
            return (builder.fpext if grow else builder.fptrunc)(vec, vector_type(to))

        def binary(op, a, b):
            ty = types.float64 if types.float64 in (a[1], b[1]) else types.float32
            return op(convert(a, ty), convert(b, ty), flags=("contract",)), ty

        def splat(value, ty):
            undef = ir.Constant(vector_type(ty), ir.Undefined)
            one = builder.insert_element(undef, value, ir.IntType(32)(0))
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            return builder.shuffle_vector(one, undef, zeros), ty

        def pointer(arr_t, arr, off):
            data = context.make_array(arr_t)(context, builder, arr).data
            return builder.bitcast(builder.gep(data, [off]), vector_type(arr_t.dtype).as_pointer())

        def load(arr_t, arr, off):
            # align 1: an input may start anywhere (a view at an odd byte offset)
            return builder.load(pointer(arr_t, arr, off), align=1), arr_t.dtype

        cu_, ca_, cv_, cb_, cc_ = (splat(c, t) for c, t in zip(coef, sig.args[6:]))
        y = binary(builder.fmul, binary(builder.fsub, load(u_t, u_arr, u_off), cu_), ca_)
        t = cc_
        if not isinstance(v_t, types.NoneType):
            t = binary(builder.fadd, binary(builder.fmul, binary(builder.fsub,
                                                                  load(v_t, v_arr, v_off), cv_),
                                            cb_), cc_)
        y = binary(builder.fadd, y, t)
        store = builder.store(convert(y, out_t.dtype), pointer(out_t, o_arr, o_off), align=LINE)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return sig, codegen


def _prefetch(locality):
    """An intrinsic ``(arr, i)`` hinting that the line holding ``arr[i]`` will
    be read soon (``llvm.prefetch``, read, the given locality); no effect on
    values, no fault."""
    @intrinsic
    def hint(typingctx, arr, i):
        if not isinstance(arr, types.Array):
            return None
        sig = types.void(arr, i)

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            byte_ptr = ir.IntType(8).as_pointer()
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [byte_ptr] + [ir.IntType(32)] * 3),
                "llvm.prefetch.p0i8")
            address = builder.bitcast(builder.gep(data, [args[1]]), byte_ptr)
            builder.call(fn, [address, ir.IntType(32)(0), ir.IntType(32)(locality),
                              ir.IntType(32)(1)])
            return context.get_dummy_value()

        return sig, codegen
    return hint


#: into every cache level (x86 ``prefetcht0``): the next block of a reduction
prefetch = _prefetch(3)
#: into L2 and below (``prefetcht1``): the next statistic while this one's
#: streaming stores are in flight — an L1 prefetch would hold one of the few
#: L1 miss buffers that the streaming stores need (NCHW float32 forward into
#: ``out=``, x evicted: 8.0–8.6 ms against 8.8–9.6 with ``prefetch``)
prefetch_l2 = _prefetch(2)


@intrinsic
def store_fence(typingctx):
    """Order the streaming stores before every later store (``sfence`` on
    x86, a full fence elsewhere)."""
    def codegen(context, builder, sig, args):
        if _X86:
            builder.call(cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence"), [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def line_head(a, off):
    """Elements of ``a`` from ``a[off]`` up to the next line boundary."""


@overload(line_head, inline="always")
def _line_head(a, off):
    size = a.dtype.bitwidth // 8

    def impl(a, off):
        return ((-(a.ctypes.data + off * size)) % LINE) // size
    return impl


def item_aligned(a, off):
    """Whether ``a[off]`` lies at a multiple of the item size: only then can
    a whole line of ``a``'s elements start on a line boundary (a view of a
    buffer at an odd byte offset is written with normal stores)."""


@overload(item_aligned, inline="always")
def _item_aligned(a, off):
    size = a.dtype.bitwidth // 8

    def impl(a, off):
        return (a.ctypes.data + off * size) % size == 0
    return impl
