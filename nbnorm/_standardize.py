"""``standardize``: the z-score of an array over any set of axes, on every backend."""
from __future__ import annotations

from math import prod

import numpy as np

from . import _validate as V
from ._api import _setup, batch_norm_forward, batch_norm_inference
from ._layout import normalize_axis, stat_shape
from ._moments import Moments


def standardize(x, axis=None, *, ddof=0, eps=0.0, skipna=False, out=None, by=None):
    """The standardized values ``z = (x − mean)/√(var + eps)`` of ``x``.

    The statistics are taken over ``axis``, one per index of the other axes,
    with ``var = Σ(x − mean)²/(n − ddof)`` — the z-score (standardized
    anomaly) of the data.  They are computed in one exact pass (Welford/Chan
    about a pivot per statistic, in float64 for float32 data: float32 data
    at 288 ± 3 gives the float64 statistics' ``z``), and ``z`` in one more
    read of ``x`` and one write.  Without ``skipna`` this is the batch-norm
    forward (its fused kernel reads ``x`` from memory once where a
    statistic's data fit in cache, and its centring keeps ``z`` free of the
    mean's rounding at any offset); with ``skipna`` the statistics of the
    values present and then ``z`` from them (the float64 mean's rounding then
    reaches ``z`` only at offsets beyond ~10⁷ standard deviations).

    Parameters
    ----------
    x : array_like
        The data, of any shape and strides: float16, float32 or float64
        (integer and bool input is promoted to float64).  NumPy arrays run
        on the CPU, CUDA arrays (``__cuda_array_interface__``) on the GPU,
        Dask arrays lazily, chunk by chunk.
    axis : int, tuple of int or None, optional
        The dimensions the statistics are taken over; ``None``, the
        default, means every axis (one statistic for the whole array).
    ddof : float, optional
        Delta degrees of freedom of the variance (its divisor is
        ``n − ddof``); 0, the default, as ``np.std``.
    eps : float, optional
        Added to the variance before the square root (default 0: a
        constant statistic gives NaN, as ``(x − x.mean())/x.std()``).
    skipna : bool, optional
        If True, NaNs are left out of the statistics (``np.nanmean``,
        ``np.nanvar``) and stay NaN in ``z`` (default False: a NaN makes
        its statistic's ``z`` NaN).
    out : ndarray, optional
        An array of ``x``'s shape and dtype to write ``z`` into (it may be
        ``x`` itself); it must not otherwise share memory with ``x``.
    by : array_like of int, optional
        One integer label per index of the labelled axis (``axis``, or its
        first entry): every element is standardized by the statistics of its
        own group (standardized anomalies against a climatology by month);
        elements with a negative label get NaN.  NumPy, CUDA and Dask arrays.

    Returns
    -------
    z : ndarray
        The standardized values, of ``x``'s shape and dtype (float64 for
        integer input); ``out`` when given; the caller's array type.

    Raises
    ------
    TypeError
        If ``x`` is None, a masked array or of an unsupported dtype, if
        ``ddof`` or ``eps`` is not a real number, or ``out`` is not an array.
    ValueError
        If ``axis`` names a dimension twice, ``eps`` is negative or not
        finite, ``out`` has another shape or dtype, is read-only or
        shares memory with ``x`` without being ``x``, or ``by`` is not one
        integer label per index of the labelled axis.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    Warns
    -----
    RuntimeWarning
        If a statistic has ``n − ddof ≤ 0`` values (its ``z`` is NaN).

    See Also
    --------
    moments : The statistics alone.
    batch_norm_forward : The same normalization with an affine map, returning the statistics.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    >>> nbnorm.standardize(x, axis=1)
    array([[-1.22474487,  0.        ,  1.22474487],
           [-1.22474487,  0.        ,  1.22474487]])

    With the unbiased variance, and NaNs left out of the statistics:

    >>> np.round(nbnorm.standardize(np.array([1.0, np.nan, 3.0]), ddof=1, skipna=True), 4)
    array([-0.7071,     nan,  0.7071])

    By the statistics of each element's group along the labelled axis:

    >>> nbnorm.standardize(np.array([1.0, 3.0, 10.0, 30.0]), 0, by=[0, 0, 1, 1])
    array([-1.,  1., -1.,  1.])
    """
    if by is not None:
        from . import _grouped
        return _grouped.standardize(x, axis, ddof, eps, skipna, out, by)
    backend, _, xa = _setup("standardize", x)
    V.float_input(xa, "x", allow_int=True)
    ddof = V.ddof_value(ddof)
    eps = V.eps_value(eps)
    ax = normalize_axis(axis, xa.ndim)
    if np.dtype(xa.dtype).kind in "iub":
        xa = backend.astype(xa, np.float64)
    n = prod(xa.shape[d] for d in ax)
    if not skipna and n >= 2 and n - ddof > 0:
        z = batch_norm_forward(xa, _ddof_weight(backend, xa, ax, n, ddof), axis=ax,
                               eps=eps * (n - ddof) / n, out=out)[0]
    else:
        state = Moments.of(xa, ax, skipna=bool(skipna))
        z = batch_norm_inference(xa, state.mean, state.var(ddof), axis=ax, eps=eps, out=out)
    return z if out is not None else backend.wrap(z, x)    # (xa may be a converted x)


def _ddof_weight(backend, x, axis, n, ddof):
    """The forward's ``weight`` that turns its biased variance into the
    ``n − ddof`` one: ``(x − mean)·w/√(M2/n + eps·(n − ddof)/n)`` is
    ``(x − mean)/√(M2/(n − ddof) + eps)`` for ``w = √((n − ddof)/n)`` (None
    for ``ddof = 0``)."""
    if ddof == 0:
        return None
    w = np.full(stat_shape(x.shape, axis), np.sqrt((n - ddof) / n))
    to_backend = getattr(backend, "from_host", None)     # a device backend's constant
    return w if to_backend is None else to_backend(w)
