"""Folding an eval-mode batch norm into the layer before it."""
from __future__ import annotations

import operator

import numpy as np

from . import _validate as V
from ._layer_base import _host
from ._layout import AxisError


_LOG10_2 = float(np.log10(2.0))


def _vector(a, name, c):
    v = np.asarray(_host(a, name, "fold_batch_norm"))
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise TypeError(f"fold_batch_norm: {name}: expected a real array, got dtype {v.dtype}")
    if v.shape != (c,):
        raise ValueError(f"fold_batch_norm: {name}: expected shape ({c},) (one per output "
                         f"channel), got {v.shape}")
    return v.astype(np.float64)


def fold_batch_norm(weight, bias, running_mean, running_var, gamma=None, beta=None, *, eps=1e-5,
                    out_axis=0):
    """Fold ``BN(x) = (x − running_mean)/√(running_var + eps)·gamma + beta`` applied
    after a layer ``W·x + b`` into that layer.

    Returns ``(W', b')`` with::

        s = gamma/√(running_var + eps),  W' = W·s (along out_axis),
        b' = (b − running_mean)·s + beta

    ``out_axis`` is the output-channel axis of ``weight``: 0 for convolution
    ``(C_out, C_in, kh, kw)`` and linear ``(C_out, C_in)`` weights, 1 for
    transposed convolutions ``(C_in, C_out, kh, kw)``.  ``bias=None`` is 0,
    ``gamma``/``beta`` None are 1/0.  Computed in float64 and returned in
    ``weight``'s dtype (NumPy arrays).

    Parameters
    ----------
    weight : array_like
        The layer's weight ``W``: a float array of at least one dimension,
        with ``C_out`` output channels on ``out_axis``.  NumPy arrays,
        anything ``np.asarray`` reads, torch tensors and CUDA arrays are
        read (copied to the host).
    bias : array_like or None
        The layer's bias ``b``, shape ``(C_out,)``, real numbers; None is 0.
    running_mean : array_like
        The batch norm's running mean, shape ``(C_out,)``, real numbers.
    running_var : array_like
        The batch norm's running variance, shape ``(C_out,)``, real numbers
        with ``running_var + eps > 0``.
    gamma : array_like, optional
        The batch norm's weight, shape ``(C_out,)``; None (the default) is 1.
    beta : array_like, optional
        The batch norm's bias, shape ``(C_out,)``; None (the default) is 0.
    eps : float, optional
        The batch norm's ``eps``, finite and ≥ 0 (default 1e-5).
    out_axis : int, optional
        The output-channel axis of ``weight`` (default 0; negative values
        count from the end).

    Returns
    -------
    weight : ndarray
        ``W'``, ``weight``'s shape and dtype.
    bias : ndarray
        ``b'``, shape ``(C_out,)``, ``weight``'s dtype.

    Raises
    ------
    TypeError
        If ``weight`` is not a float array, another argument holds no real
        numbers, an argument cannot be read as an array, ``out_axis`` is not
        an int, or ``eps`` not a real number.
    ValueError
        If ``weight`` is a scalar (0-d), a vector is not of shape
        ``(C_out,)``, ``eps`` is negative or not finite, or
        ``running_var + eps`` is not > 0 everywhere.
    numpy.exceptions.AxisError
        If ``out_axis`` is out of range for ``weight.ndim``.
    OverflowError
        If a folded value is past the largest of float64 or of
        ``weight.dtype`` (see Notes).

    See Also
    --------
    BatchNorm.fold_into : The same from a layer.
    batch_norm_inference : The map that is folded.

    Notes
    -----
    Overflow: from finite inputs the result is either finite or
    ``OverflowError`` naming the folded array, the output channel and its
    size — never inf or NaN.  The scale ``s`` and the intermediate
    ``b − running_mean`` are carried as ``mantissa·2**exponent``, so they
    overflow or underflow nowhere on their own (``1e300·(1e-200/√1e-300)``
    folds to ``1e250``, not inf; ``1e200·(1e-300/√1e300)`` to ``1e-250``,
    not 0); an ``OverflowError`` means the folded value itself is past
    float64's largest (about 1.8e308), or past ``weight.dtype``'s (float16:
    65504; float32: 3.4e38).  For results in float64's normal range this
    is bitwise the plain formula's rounding.  Non-finite inputs propagate
    as in the formula.

    Examples
    --------
    A linear layer ``(C_out, C_in) = (2, 3)`` followed by a batch norm:

    >>> W = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]], dtype=np.float32)
    >>> b = np.array([0.0, 1.0], dtype=np.float32)
    >>> running_mean = np.array([1.0, -1.0], dtype=np.float32)
    >>> running_var = np.array([4.0, 0.25], dtype=np.float32)
    >>> W2, b2 = nbnorm.fold_batch_norm(W, b, running_mean, running_var, eps=0.0)
    >>> W2
    array([[ 0.5,  1. ,  0. ],
           [ 1. , -2. ,  2. ]], dtype=float32)
    >>> b2
    array([-0.5,  4. ], dtype=float32)
    >>> x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    >>> bn = nbnorm.batch_norm_inference((W @ x + b)[None], running_mean, running_var,
    ...                                  axis=0, eps=0.0)
    >>> bool(np.allclose(bn[0], W2 @ x + b2))
    True

    A float16 convolution weight keeps its dtype; a transposed
    convolution's output channels are on axis 1:

    >>> W2, b2 = nbnorm.fold_batch_norm(np.ones((2, 3, 3, 3), np.float16), None,
    ...                                 running_mean, running_var)
    >>> W2.dtype, b2.shape
    (dtype('float16'), (2,))
    >>> W2, b2 = nbnorm.fold_batch_norm(np.ones((3, 2, 3, 3)), None, running_mean,
    ...                                 running_var, out_axis=1)
    >>> W2.shape
    (3, 2, 3, 3)
    """
    w = np.asarray(_host(weight, "weight", "fold_batch_norm"))
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
    with np.errstate(over="ignore"):
        positive = np.all(rv + eps > 0)
    if not positive:
        raise ValueError("fold_batch_norm: running_var: running_var + eps must be > 0 everywhere")
    g = np.ones(c) if gamma is None else _vector(gamma, "gamma", c)
    be = np.zeros(c) if beta is None else _vector(beta, "beta", c)
    b = np.zeros(c) if bias is None else _vector(bias, "bias", c)
    shape = [1] * w.ndim
    shape[ax] = c
    w64 = w.astype(np.float64)
    with np.errstate(all="ignore"):
        # √(running_var + eps), also where the sum overflows float64 (halved square root)
        q = rv + eps
        d = np.sqrt(q)
        wide = np.isinf(q) & np.isfinite(rv)
        d[wide] = 2.0 * np.sqrt(rv[wide] * 0.25 + eps * 0.25)
        # s = gamma/d as sm·2**se: the mantissas' quotient, the exponents' difference
        mg, eg = np.frexp(g)
        md, ed = np.frexp(d)
        sm, se = mg / md, eg - ed
        # W' = W·s = (mw·sm)·2**(ew + se)
        mw, ew = np.frexp(w64)
        wm, we = mw * sm.reshape(shape), ew + se.reshape(shape)
        w2 = np.ldexp(wm, we)
        # b' = (b − running_mean)·s + beta; b − running_mean halved where it overflows
        t = b - rm
        mt, et = np.frexp(t)
        wide = np.isinf(t) & np.isfinite(b) & np.isfinite(rm)
        mt[wide], et[wide] = np.frexp(b[wide] * 0.5 - rm[wide] * 0.5)
        et[wide] += 1
        um, ue = mt * sm, et + se
        b2 = np.ldexp(um, ue) + be
        # where (b − running_mean)·s alone overflows, beta may bring the sum back: ×¼, sum, ×4
        finite_s = np.isfinite(g) & np.isfinite(rv)
        finite_b = finite_s & np.isfinite(b) & np.isfinite(rm) & np.isfinite(be)
        redo = ~np.isfinite(b2) & finite_b
        b2[redo] = np.ldexp(np.ldexp(um[redo], ue[redo] - 2) + np.ldexp(be[redo], -2), 2)
    _overflow("weight", w2, np.isfinite(w64) & finite_s.reshape(shape), ax, wm, we, w64, g, rv,
              eps)
    _overflow("bias", b2, finite_b, 0, um, ue, None, g, rv, eps)
    out = []
    for name, v in (("weight", w2), ("bias", b2)):
        with np.errstate(over="ignore"):
            cast = v.astype(w.dtype)
        bad = ~np.isfinite(cast) & np.isfinite(v)
        if np.any(bad):
            raise OverflowError(f"fold_batch_norm: the folded {name} overflows {w.dtype} "
                                f"(largest {np.finfo(w.dtype).max}, folded "
                                f"{np.max(np.abs(v[bad])):.6g}); fold into a wider dtype")
        out.append(cast)
    return out[0], out[1]


def _approx(m, e):
    """``m·2**e`` written out even where it is past float64's range."""
    if m == 0:
        return "0"
    lg = np.log10(abs(m)) + e * _LOG10_2
    k = int(np.floor(lg))
    return f"{'-' if m < 0 else ''}{10 ** (lg - k):.4g}e{k:+d}"


def _overflow(name, v, finite_in, ax, m, e, w, g, rv, eps):
    """``OverflowError`` where ``v`` is not finite although its inputs are."""
    bad = ~np.isfinite(v) & finite_in
    if not np.any(bad):
        return
    at = np.argwhere(bad)[0]
    i = int(at[ax]) if v.ndim else 0
    at = tuple(int(j) for j in at)
    what = (f"weight{list(at)} = {w[at]:.6g}" if w is not None else "bias")
    raise OverflowError(f"fold_batch_norm: the folded {name} overflows float64 at output "
                        f"channel {i}: {what} folds to about {_approx(m[at], e[at])} "
                        f"(gamma = {g[i]:.6g}, running_var = {rv[i]:.6g}, eps = {eps:g}; "
                        f"float64's largest is {np.finfo(np.float64).max:.6g})")
