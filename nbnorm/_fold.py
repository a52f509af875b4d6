"""Folding an eval-mode batch norm into the layer before it."""
from __future__ import annotations

import operator

import numpy as np

from . import _validate as V
from ._layer_base import _host
from ._layout import AxisError


def _vector(a, name, c):
    v = np.asarray(_host(a, name))
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise TypeError(f"fold_batch_norm: {name}: expected a real array, got dtype {v.dtype}")
    if v.shape != (c,):
        raise ValueError(f"fold_batch_norm: {name}: expected shape ({c},) (one per output "
                         f"channel), got {v.shape}")
    return v.astype(np.float64)


def fold_batch_norm(weight, bias, running_mean, running_var, gamma=None, beta=None, *, eps=1e-5,
                    out_axis=0):
    """Fold ``BN(x) = (x − running_mean)/√(running_var + eps)·gamma + beta`` applied
    after a layer ``W·x + b`` into that layer: returns ``(W', b')`` with

        s = gamma/√(running_var + eps),  W' = W·s (along ``out_axis``),
        b' = (b − running_mean)·s + beta

    ``out_axis`` is the output-channel axis of ``weight``: 0 for convolution
    ``(C_out, C_in, kh, kw)`` and linear ``(C_out, C_in)`` weights, 1 for
    transposed convolutions ``(C_in, C_out, kh, kw)``.  ``bias=None`` is 0,
    ``gamma``/``beta`` None are 1/0.  Computed in float64 and returned in
    ``weight``'s dtype (NumPy arrays); a result that overflows that dtype
    raises ``OverflowError`` naming it instead of returning inf.
    """
    w = np.asarray(_host(weight, "weight"))
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"fold_batch_norm: weight: expected a float array, got dtype {w.dtype}")
    if w.ndim < 1:
        raise ValueError("fold_batch_norm: weight: expected at least 1 dimension, got a scalar")
    try:
        ax = operator.index(out_axis)
    except TypeError:
        raise TypeError(f"out_axis: expected an int, got {type(out_axis).__name__}") from None
    if not -w.ndim <= ax < w.ndim:
        raise AxisError(ax, w.ndim, msg_prefix="out_axis")
    ax %= w.ndim
    c = w.shape[ax]
    eps = V.eps_value(eps)
    rm = _vector(running_mean, "running_mean", c)
    rv = _vector(running_var, "running_var", c)
    if not np.all(rv + eps > 0):
        raise ValueError("fold_batch_norm: running_var: running_var + eps must be > 0 everywhere")
    g = np.ones(c) if gamma is None else _vector(gamma, "gamma", c)
    be = np.zeros(c) if beta is None else _vector(beta, "beta", c)
    b = np.zeros(c) if bias is None else _vector(bias, "bias", c)
    s = g / np.sqrt(rv + eps)
    shape = [1] * w.ndim
    shape[ax] = c
    w2 = w.astype(np.float64) * s.reshape(shape)
    b2 = (b - rm) * s + be
    out = []
    for name, v in (("weight", w2), ("bias", b2)):
        if np.all(np.isfinite(v)):
            with np.errstate(over="ignore"):
                cast = v.astype(w.dtype)
            if not np.all(np.isfinite(cast)):
                raise OverflowError(f"fold_batch_norm: the folded {name} overflows {w.dtype} "
                                    f"(largest {np.finfo(w.dtype).max}, folded "
                                    f"{np.max(np.abs(v)):.6g}); fold into a wider dtype")
        else:
            cast = v.astype(w.dtype)    # non-finite inputs stay non-finite
        out.append(cast)
    return out[0], out[1]
