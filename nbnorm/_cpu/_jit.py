"""Compilation settings of the CPU kernels and the shared numerics they
compile (:mod:`nbnorm._welford`); block and tile sizes.

See :mod:`.kernels` for the overview of the CPU kernels.
"""
from __future__ import annotations

import ctypes
import sys

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.core.registry import CPUDispatcher

from .. import _welford
from .._cache import lock_saves
from ._threads import kernel

BLOCK = 4096    # elements per Welford block (16 KiB of float32: stays in L1)
TILE = 512      # adjacent statistics per channels-last work item
GROUP_ROWS = 64 # terms a channels-last column sums in float32 before a float64 fold
SUPER_ROW = 128 # elements read as one vector when narrow channels-last rows lie back to back
ROWS_BLOCK = 8 * BLOCK  # elements per channels-last block: one pass each, so it
                        # may outgrow L1, and the scalar per-column merge is rare

# Reductions along a run may be reassociated (that is what lets LLVM
# vectorize a sum; ``centred`` keeps the shift exact inside them); elementwise
# code and per-column (channels-last) accumulations vectorize without it and
# may only contract to FMAs: with reassociation LLVM would rewrite
# (x − mean)·α as x·α − mean·α and lose every digit when |mean| ≫ std.
# Neither set assumes away NaN or inf.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_EXACT = {"contract"}


class _OneBuildPerType(CPUDispatcher):
    """A callee compiled once per argument *type*: Numba types an integer or
    boolean constant at a call site as a literal (``Literal[int](1)``) and
    would compile the callee once more for every literal, e.g. a stride 1
    written out in one caller and a stride variable in another."""

    def get_call_template(self, args, kws):
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})


def _callee(**options):
    """``njit(**options)`` for functions called from other kernels (see
    :class:`_OneBuildPerType`)."""
    def build(fn):
        dispatcher = njit(**options)(fn)
        dispatcher.__class__ = _OneBuildPerType
        return dispatcher
    return build


def _provide_int128_helpers():
    """Make LLVM's 128-bit division helpers (``__udivti3`` and kin) known to
    Numba's JIT; whether they now are.

    Inlined into a kernel, a range's loop bounds can be computed by LLVM in
    128-bit integers, and x86-64 code divides those by calling a helper from
    the compiler's runtime (libgcc_s on Linux).  The process has that library
    loaded, but not in the global scope Numba's JIT links against: an
    unresolved helper becomes a call to address 0.
    """
    names = ("__udivti3", "__divti3", "__umodti3", "__modti3")
    if sys.platform.startswith("linux"):
        libraries = ("libgcc_s.so.1",)
    elif sys.platform == "darwin":
        libraries = (None, "/usr/lib/system/libcompiler_rt.dylib")
    else:
        return False
    for name in names:
        if llvm.address_of_symbol(name):
            continue
        for library in libraries:
            try:
                address = ctypes.cast(getattr(ctypes.CDLL(library), name),
                                      ctypes.c_void_p).value
            except (OSError, AttributeError):
                continue
            llvm.add_symbol(name, address)
            break
        else:
            return False
    return True


# Callees with fast-math flags are inlined into every kernel (LLVM
# ``alwaysinline``), never called: a call leaves what it reaches to the
# linking, and a kernel compiled next to callees loaded from Numba's cache
# was seen to sum in another order than the one that compiled them (the
# backward's Σdy, last bits), so the result depended on which process
# compiled what.  Where the 128-bit helpers such inlined loops may need
# cannot be provided, the callees stay calls.
_INLINE = _provide_int128_helpers()
_jit = _callee(cache=True, fastmath=_FAST, error_model="numpy", forceinline=_INLINE)
_exact = _callee(cache=True, fastmath=_EXACT, error_model="numpy", forceinline=_INLINE)
# run/row bodies are inlined at each call site so that LLVM sees the literal
# offset 0 and stride 1 of the contiguous call and vectorizes that copy
_inline = njit(cache=True, fastmath=_FAST, error_model="numpy", inline="always")
_inline_exact = njit(cache=True, fastmath=_EXACT, error_model="numpy", inline="always")
# parallel kernels come in a parallel and a serial build (see ``_threads``);
# prange indices are cast to int64: uint64 parfor indices would turn index
# arithmetic into float64
# (a callee compiled without its own ``fastmath`` or ``forceinline`` option
# inherits its caller's, so every decorator states both)
_pjit = kernel(cache=True, fastmath=_FAST, error_model="numpy", forceinline=False)
_pjit_exact = kernel(cache=True, fastmath=_EXACT, error_model="numpy", forceinline=False)
# the merge formulas: no fast-math flags at all
_strict = _callee(cache=True, fastmath=False, error_model="numpy", forceinline=False)

chan_merge = _strict(_welford.chan_merge)
shifted_moments = _strict(_welford.shifted_moments)
merge_state = _strict(_welford.merge_states)
two_sum = _strict(_welford.two_sum)
invstd_of = _strict(_welford.invstd_of)
forward_scale = _strict(_welford.forward_scale)
backward_coefficients = _strict(_welford.backward_coefficients)
narrow_coefficients = _strict(_welford.narrow_coefficients)


@_strict
def exact_ratio(a, b):
    """``a / b`` correctly rounded (the fast-math flags of a caller would let
    LLVM turn it into ``a·(1/b)``)."""
    return a / b


@_strict
def invstd_vector(var, eps):
    """``1/√(var + eps)`` per statistic with the scalar formula the fused
    kernel uses, so fused and unfused passes agree to the last bit."""
    out = np.empty_like(var)
    for i in range(var.size):
        out[i] = invstd_of(var[i], eps)
    return out


@_strict
def narrow(a, out):
    """``out`` ← ``a`` rounded to ``out``'s dtype (to nearest, as NumPy's
    ``astype``; beyond float32's range inf, without NumPy's warning)."""
    for i in range(a.size):
        out[i] = a[i]


@_strict
def all_finite(a, b):
    """Whether every entry of the float arrays ``a`` and ``b`` is finite (one
    compiled pass: the common-case gate of ``nbnorm._extremes.repair``)."""
    for i in range(a.size):
        if not (np.isfinite(a.flat[i]) and np.isfinite(b.flat[i])):
            return False
    return True


# saves to Numba's cache go under a lock (see nbnorm._cache): the kernels of
# this directory (exact_ratio's) and nbnorm._welford's formulas (chan_merge's)
lock_saves(exact_ratio)
lock_saves(chan_merge)
