"""The CUDA kernels and the one specification of their parameter types.

- :mod:`.device`: launch constants and device functions (addressing,
  pivots, warp/block merges);
- :mod:`.element`: the passes over full-size operands (``welford``,
  ``dual_sums``, ``affine``), one kernel each, built per accumulator type
  and thread mapping;
- :mod:`.per_stat`: per-statistic merges and coefficients;
- :mod:`.states`: :class:`nbnorm.Moments` states on the device.

Every parameter name has one type wherever it appears (:data:`TYPES`); the
signature of any kernel for given dtypes is generated from its parameter
list (:func:`signature`), so a kernel's parameters are written once, in
its ``def``.
"""
from __future__ import annotations

import inspect

from . import per_stat, states
from .device import ACC_N, SIM, TPB, WARP, centred
from .element import ELEMENT
from .per_stat import (
    finalize_sums,
    finalize_welford,
    gather,
    inference_coefficients,
    sum_partials,
    update_running,
)


def _names(names, t):
    return dict.fromkeys(names.split(), t)


#: the type of each kernel parameter name: ``{T}`` storage dtype, ``{A}``
#: accumulator dtype, ``{S}`` statistics dtype
TYPES = {
    **_names("x dy out u v src run", "{T}[::1]"),
    **_names("ks rs bases sizes", "int64[::1]"),
    **_names("ss kst rst strides", "int64[:, ::1]"),
    **_names("p pd px pw pm po pu pv n n_stats chunk n_chunks width n_tiles base lanes",
             "int64"),
    **_names("skipna has_cu has_v has_w has_b scaled training rms keep_centre", "boolean"),
    **_names("eps inv_dof momentum scale ddof", "float64"),
    **_names("cu cv", "float64[:, ::1]"),
    **_names("w b bias mu inv pivots var centre vector pivot relative mean m2 lo mean_a m2_a "
             "lo_a mean_b m2_b lo_b values roots", "float64[::1]"),
    **_names("ca cb cc part_count part_mean part_m2 part_s1 part_s2 dweight dbias", "{A}[::1]"),
    **_names("mean_out var_out invstd_out alpha beta batch", "{S}[::1]"),
    **_names("count count_a count_b", "int64[::1]"),
    "short": "int32[::1]",
}

STORAGE = ("float16", "float32", "float64")
ACCUMULATOR = {"float16": "float32", "float32": "float32", "float64": "float64"}


def signature(kernel, T="float64", A="float64", S="float64"):
    """``kernel``'s signature string for the given dtypes, from its parameter names."""
    names = inspect.signature(getattr(kernel, "py_func", kernel)).parameters
    return "void(" + ", ".join(TYPES[p].format(T=T, A=A, S=S) for p in names) + ")"


def kernel_signatures():
    """Every kernel with every signature the backend launches it with:
    a list of ``(name, kernel, [signature strings])``."""
    out = []
    for (acc, kept), kernels in ELEMENT.items():
        stores = [t for t in STORAGE if ACCUMULATOR[t] == acc.name]
        mapping = "inner_kept" if kept else "inner_reduced"
        for name, kernel in kernels.items():
            out.append((f"{name}[{acc.name},{mapping}]", kernel,
                        [signature(kernel, T=t, A=acc.name) for t in stores]))
    accs = ("float32", "float64")
    # statistics in the accumulator type, and float64 ones (Moments states) from float32 partials
    out.append(("finalize_welford", finalize_welford,
                [signature(finalize_welford, T=t, A=ACCUMULATOR[t], S=s) for t in STORAGE
                 for s in sorted({ACCUMULATOR[t], "float64"})]))
    for kernel in (finalize_sums, sum_partials, states.count_partials):
        out.append((kernel.py_func.__name__, kernel, [signature(kernel, A=a) for a in accs]))
    out.append(("inference_coefficients", inference_coefficients,
                [signature(inference_coefficients, S=s) for s in accs]))
    out.append(("gather", gather, [signature(gather, T=t) for t in
                                   STORAGE + ("int32", "int64", "uint8", "boolean")]))
    out.append(("update_running", update_running,
                [signature(update_running, T=t, S=s) for t in STORAGE for s in accs]))
    for kernel in (states.merge_states, states.split_mean, states.state_variance,
                   states.sqrt_into):
        out.append((kernel.py_func.__name__, kernel, [signature(kernel)]))
    return out


__all__ = ["ACC_N", "ELEMENT", "SIM", "TPB", "TYPES", "WARP", "centred", "finalize_sums",
           "finalize_welford", "gather", "inference_coefficients", "kernel_signatures", "per_stat",
           "signature", "sum_partials", "update_running"]
