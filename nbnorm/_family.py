"""Public functions of the normalization family: layer, group, instance and
RMS norm, forward and backward, on one engine (see :mod:`nbnorm._geometry`).

Shapes: layer/RMS norm reduce over ``axis`` (int or tuple, any subset) and
return statistics of ``x.shape`` without those dims; ``weight``/``bias``
have the normalized dims' shape ``tuple(x.shape[a] for a in sorted(axis))``.
Group/instance norm take axis 0 as the batch and ``channel_axis`` (1 for
NCHW, −1 for channels-last) as the channels C; statistics are ``(N, G)``
(instance: ``(N, C)``); ``weight``/``bias`` are per channel ``(C,)``.
Statistics and parameter gradients are float32 (float64 for float64 ``x``).
"""
from __future__ import annotations

import warnings
from math import prod

import numpy as np

from . import _geometry as G
from . import _validate as V
from ._api import (_aliasing, _check_aliasing, _deliver, _late, _native_out, _prepared_call,
                   _remember, _result, _setup)
from ._calls import prepared_op
from ._contract import NormFamily, implements

__all__ = ["layer_norm", "layer_norm_backward", "group_norm", "group_norm_backward",
           "instance_norm", "instance_norm_backward", "rms_norm", "rms_norm_backward"]


def _op(backend, fname, name):
    """``backend.<name>`` of the optional :class:`~nbnorm._contract.NormFamily` part."""
    if not implements(backend, NormFamily):
        raise NotImplementedError(f"{fname}: not implemented yet for {backend.name} arrays; "
                                  f"pass NumPy arrays")
    return getattr(backend, name)


def _param_arrays(a, names, geo, what):
    for name in names:
        if a.get(name) is not None:
            V.float_input(a[name], name)
            V.shape_is(a[name], name, geo.param_shape, what)


def _forward(key, given, fname, names, geo_of, eps, rms, what, finish, check=None):
    """Validate a forward call of arrays ``given`` (named ``names``, ``x``
    first, ``out`` last) and prepare it: returns ``(call, converted)``, with
    ``call(x, out, arrays)`` → ``finish(backend, arrays, geo, y, c, var, inv,
    x, out)`` (``arrays`` in ``names`` order); ``check(a, xa, geo)``
    validates the other arguments before anything is computed."""
    a_given = dict(zip(names, given))
    x = a_given.pop("x")
    backend, a, xa = _setup(fname, x, **a_given)
    V.float_input(xa, "x")
    geo = geo_of(xa.shape)
    _param_arrays(a, ("weight", "bias"), geo, what)
    V.out_array(a["out"], xa)
    _check_aliasing(a, [("out", "x")])
    if eps is None:
        eps = float(np.finfo(xa.dtype).eps)
    eps = V.eps_value(eps)
    if prod(xa.shape) == 0:
        raise ValueError(f"x: zero-size input of shape {tuple(xa.shape)}; nothing to normalize")
    if check is not None:
        check(a, xa, geo)
    o, late = _native_out(a["out"])
    op = _op(backend, fname, "norm_forward")
    launch = prepared_op(backend, "norm_forward", xa, geo, a.get("weight"), a.get("bias"), eps,
                         rms, o, fallback=lambda x, w, b, o: op(x, geo, w, b, eps, rms, o))
    check_aliasing = _aliasing(names, [("out", "x")])

    at_w = names.index("weight")
    at_b = names.index("bias") if "bias" in names else None

    def call(x_given, out_given, arrays):
        check_aliasing(arrays)
        o, late_out = _late(arrays[-1], late)
        y, c, var, inv = launch(arrays[0], arrays[at_w], None if at_b is None else arrays[at_b],
                                o)
        return finish(backend, arrays, geo, _deliver(y, late_out), c, var, inv, x_given,
                      out_given)
    return _remember(key, call, backend, given, tuple(a[k] for k in names), late)


def _backward(key, given, fname, names, geo_of, rms, what, finish):
    """As :func:`_forward` for a backward: ``names`` are ``dy``, ``x``, the
    statistics, ``weight``, ``out``; ``finish(backend, dx, dw, db, x, out)``."""
    a_given = dict(zip(names, given))
    if a_given["dy"] is None:
        raise TypeError(f"{fname}: dy is required, got None")
    x = a_given.pop("x")
    backend, a, xa = _setup(fname, x, **a_given)
    V.float_input(xa, "x")
    dya = a["dy"]
    V.float_input(dya, "dy")
    V.shape_is(dya, "dy", xa.shape, "that of x")
    V.same_dtype(dya, "dy", xa.dtype, "x")
    geo = geo_of(xa.shape)
    stats = names[2:-2]
    for name in stats:
        if a[name] is None:
            raise TypeError(f"{fname}: {name} is required, got None")
        V.float_input(a[name], name)
        V.shape_is(a[name], name, geo.stat_shape, "the statistics' shape the forward returned")
    _param_arrays(a, ("weight",), geo, what)
    V.out_array(a["out"], xa)
    _check_aliasing(a, [("out", "dy"), ("out", "x")])
    if prod(xa.shape) == 0:
        raise ValueError(f"x: zero-size input of shape {tuple(xa.shape)}")
    o, late = _native_out(a["out"])
    op = _op(backend, fname, "norm_backward")
    centre = None if rms else a["mean"]
    launch = prepared_op(backend, "norm_backward", dya, xa, centre, a[stats[-1]], geo,
                         a["weight"], rms, o,
                         fallback=lambda dy, x, c, i, w, o: op(dy, x, c, i, geo, w, rms, o))
    check_aliasing = _aliasing(names, [("out", "dy"), ("out", "x")])

    def call(x_given, out_given, arrays):
        check_aliasing(arrays)
        dya, xa, *st, w, o = arrays
        o, late_out = _late(o, late)
        dx, dw, db = launch(dya, xa, None if rms else st[0], st[-1], w, o)
        return finish(backend, _deliver(dx, late_out), dw, db, x_given, out_given)
    return _remember(key, call, backend, given, tuple(a[k] for k in names), late)


def _run(fname, names, given, scalars, prepare, *args):
    """The prepared call of this signature (``prepare`` is :func:`_forward` or
    :func:`_backward`), run on ``given`` (see :func:`._api._prepared_call`)."""
    return _prepared_call(fname, given, names.index("x"), scalars, prepare, fname, names, *args)


def _y_mean_invstd(backend, arrays, geo, y, c, var, inv, x, out):
    return _result(backend, y, x, out), backend.wrap(c, x), backend.wrap(inv, x)


def _y_rstd(backend, arrays, geo, y, c, var, inv, x, out):
    return _result(backend, y, x, out), backend.wrap(inv, x)


def _dx_dweight_dbias(backend, dx, dw, db, x, out):
    return _result(backend, dx, x, out), backend.wrap(dw, x), backend.wrap(db, x)


def _dx_dweight(backend, dx, dw, db, x, out):
    return _result(backend, dx, x, out), backend.wrap(dw, x)


_FORWARD = ("x", "weight", "bias", "out")
_RUNNING = ("x", "weight", "bias", "running_mean", "running_var", "out")
_RMS = ("x", "weight", "out")
_BACKWARD = ("dy", "x", "mean", "invstd", "weight", "out")
_RMS_BACKWARD = ("dy", "x", "rstd", "weight", "out")


def _over_axes(axis):
    return lambda shape: G.over_axes(shape, axis)


def _groups(channel_axis, groups):
    return lambda shape: G.per_group(shape, channel_axis, groups)


def _instances(channel_axis):
    def geo(shape):
        c = G.channel_axis_of(shape, channel_axis)
        return G.per_group(shape, c, shape[c])
    return geo


_NORMALIZED = "the normalized dims of x"
_PER_CHANNEL = "one per channel of x"


# ------------------------------------------------------------------ layer
def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None):
    """Layer normalization over ``axis``.

    ``y = (x − mean)·invstd·weight + bias`` with ``mean``, the biased
    variance ``var`` and ``invstd = 1/√(var + eps)`` per index of the other
    axes; ``weight``/``bias`` indexed by the normalized dims (PyTorch's
    ``normalized_shape`` when the axes are trailing).  Returns
    ``(y, mean, invstd)``; ``out`` receives ``y`` (it may be ``x``).

    Parameters
    ----------
    x : array_like
        The data: float16, float32 or float64, any shape with at least one
        element.  A NumPy array or anything ``np.asarray`` reads runs on the
        CPU, a CUDA array (one exposing ``__cuda_array_interface__``) on
        the GPU; every array argument must be on the same device.
    weight : array_like, optional
        The scale, of the normalized dims' shape
        ``tuple(x.shape[a] for a in sorted(axis))`` (``x.shape[-1:]`` for
        the default ``axis``), float16/32/64.  None (the default) is 1.
    bias : array_like, optional
        The shift, shaped as ``weight``.  None (the default) is 0.
    axis : int, tuple of int or None, optional
        The dimensions normalized over, any non-empty subset (default -1,
        the last; ``(-2, -1)`` for the two trailing ones); negative values
        count from the end; None is every axis.
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    out : ndarray, optional
        Receives ``y``: ``x``'s shape and dtype (either byte order), writable.
        It may be ``x`` itself (in place); otherwise it must not share
        memory with any other argument.

    Returns
    -------
    y : ndarray
        The normalized data, ``x``'s shape and dtype; ``out`` itself when
        given, else the caller's array type.
    mean : ndarray
        The mean per statistic, of ``x.shape`` without the ``axis``
        dimensions; float32 (float64 for float64 ``x``).
    invstd : ndarray
        ``1/√(var + eps)``; shape and dtype of ``mean``.

    Raises
    ------
    TypeError
        If ``x`` is None; if an array argument has an unsupported dtype (not
        float16/32/64); if ``eps`` is not a real number or ``axis`` not an
        int or a tuple of ints; if the arrays are not all on one device; if
        ``out`` is not an array that can be written in place.
    ValueError
        If ``weight`` or ``bias`` does not have the normalized dims' shape;
        if ``out`` differs from ``x`` in shape or dtype, is read-only, has
        overlapping elements or shares memory with another argument (other
        than being exactly ``x``); if ``eps`` is negative or not finite; if
        ``x`` has no element; if ``axis`` is empty or names a dimension twice.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    See Also
    --------
    layer_norm_backward : The gradients of this function.
    rms_norm : Normalization by the root mean square, without centring.
    LayerNorm : A layer with PyTorch's semantics.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 4.0, 4.0]], dtype=np.float32)
    >>> y, mean, invstd = nbnorm.layer_norm(x)
    >>> mean
    array([3., 3.], dtype=float32)
    >>> np.round(invstd, 4)
    array([0.5345, 1.    ], dtype=float32)
    >>> np.round(y, 3)
    array([[-1.069, -0.535,  0.   ,  1.604],
           [-1.   , -1.   ,  1.   ,  1.   ]], dtype=float32)

    With an affine map, and over the two trailing axes of a 3-d array
    (``weight`` then has their shape):

    >>> weight = np.array([1.0, 2.0, 1.0, 0.5], dtype=np.float32)
    >>> bias = np.full(4, 0.1, dtype=np.float32)
    >>> np.round(nbnorm.layer_norm(x, weight, bias)[0], 3)
    array([[-0.969, -0.969,  0.1  ,  0.902],
           [-0.9  , -1.9  ,  1.1  ,  0.6  ]], dtype=float32)
    >>> x3 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    >>> y, mean, invstd = nbnorm.layer_norm(x3, np.ones((3, 4), np.float32), axis=(1, 2))
    >>> y.shape, mean.shape
    ((2, 3, 4), (2,))
    """
    return _run("layer_norm", _FORWARD, (x, weight, bias, out), (axis, eps), _forward,
                _over_axes(axis), eps, False, _NORMALIZED, _y_mean_invstd)


def layer_norm_backward(dy, x, mean, invstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`layer_norm`.

    With ``g = dy·weight`` and ``x̂ = (x − mean)·invstd`` over the ``n``
    normalized values of a statistic::

        dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n),  dweight = Σ dy·x̂,  dbias = Σ dy

    (``dweight``/``dbias`` summed over the other axes; returned even when
    ``weight`` is None).  Returns ``(dx, dweight, dbias)``.

    Parameters
    ----------
    dy : array_like
        The gradient of the loss with respect to ``y``: ``x``'s shape and dtype.
    x : array_like
        The forward's input: float16, float32 or float64, at least one
        element; a NumPy (or ``np.asarray``-readable) or CUDA array, every
        array argument on the same device.
    mean : array_like
        The forward's ``mean``: ``x.shape`` without the ``axis`` dimensions,
        float16/32/64.
    invstd : array_like
        The forward's ``invstd``, shaped as ``mean``, float16/32/64.
    weight : array_like, optional
        The forward's scale, of the normalized dims' shape
        ``tuple(x.shape[a] for a in sorted(axis))``, float16/32/64.  None
        (the default) is 1.
    axis : int, tuple of int or None, optional
        The forward's ``axis`` (default -1).
    out : ndarray, optional
        Receives ``dx``: ``x``'s shape and dtype (either byte order),
        writable.  It may be ``dy`` or ``x`` itself; otherwise it must not
        share memory with any other argument.

    Returns
    -------
    dx : ndarray
        The gradient with respect to ``x``, ``x``'s shape and dtype; ``out``
        itself when given, else the caller's array type.
    dweight : ndarray
        ``Σ dy·x̂`` over the other axes, of the normalized dims' shape;
        float32 (float64 for float64 ``x``).
    dbias : ndarray
        ``Σ dy`` over the other axes; shape and dtype of ``dweight``.

    Raises
    ------
    TypeError
        If ``dy``, ``x``, ``mean`` or ``invstd`` is None; if an array
        argument has an unsupported dtype (not float16/32/64) or ``dy``'s
        dtype differs from ``x``'s; if ``axis`` is not an int or a tuple of
        ints; if the arrays are not all on one device; if ``out`` is not an
        array that can be written in place.
    ValueError
        If ``dy``'s shape differs from ``x``'s, ``mean``'s or ``invstd``'s
        from the statistics' shape, or ``weight``'s from the normalized
        dims'; if ``out`` differs from ``x`` in shape or dtype, is read-only,
        has overlapping elements or shares memory with another argument
        (other than being exactly ``dy`` or ``x``); if ``x`` has no element;
        if ``axis`` is empty or names a dimension twice.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    See Also
    --------
    layer_norm : The forward.
    LayerNorm.backward : The same through a layer.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 4.0, 4.0]], dtype=np.float32)
    >>> weight = np.array([1.0, 2.0, 1.0, 0.5], dtype=np.float32)
    >>> y, mean, invstd = nbnorm.layer_norm(x, weight)
    >>> dy = np.array([[1.0, 0.0, 0.0, -1.0], [0.5, 0.5, -0.5, -0.5]], dtype=np.float32)
    >>> dx, dweight, dbias = nbnorm.layer_norm_backward(dy, x, mean, invstd, weight)
    >>> np.round(dx, 3)
    array([[ 0.2  , -0.2  , -0.067,  0.067],
           [-0.25 ,  0.25 , -0.125,  0.125]], dtype=float32)
    >>> np.round(dweight, 3)
    array([-1.569, -0.5  , -0.5  , -2.104], dtype=float32)
    >>> dbias
    array([ 1.5,  0.5, -0.5, -1.5], dtype=float32)
    """
    return _run("layer_norm_backward", _BACKWARD, (dy, x, mean, invstd, weight, out), (axis,),
                _backward, _over_axes(axis), False, _NORMALIZED, _dx_dweight_dbias)


# ------------------------------------------------------------------ group
def group_norm(x, num_groups, weight=None, bias=None, *, channel_axis=1, eps=1e-5, out=None):
    """Group normalization: statistics per (sample, group of C/G channels)
    over those channels and every other axis but 0.

    The affine is per channel::

        y[n, c, …] = (x − mean[n, g(c)])·invstd[n, g(c)]·weight[c] + bias[c]

    with the biased variance and ``invstd = 1/√(var + eps)``; axis 0 is the
    batch and ``channel_axis`` the channels C, split into ``num_groups``
    consecutive groups.  ``C % num_groups ≠ 0`` raises ``ValueError``.
    Returns ``(y, mean, invstd)`` with ``mean``/``invstd`` of shape
    ``(N, num_groups)``.

    Parameters
    ----------
    x : array_like
        The batch, ``(N, C, …)`` (or channels-last with ``channel_axis=-1``):
        float16, float32 or float64, at least 2 dimensions and one element.
        A NumPy array or anything ``np.asarray`` reads runs on the CPU, a
        CUDA array on the GPU; every array argument must be on the same device.
    num_groups : int
        The number of groups G, a positive divisor of the channel count C.
    weight : array_like, optional
        The scale, one per channel: shape ``(C,)``, float16/32/64.  None
        (the default) is 1.
    bias : array_like, optional
        The shift, shape ``(C,)``.  None (the default) is 0.
    channel_axis : int, optional
        The channel axis of ``x``: 1 (the default) for NCHW-style layouts,
        -1 for channels-last; never 0, the batch axis.
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    out : ndarray, optional
        Receives ``y``: ``x``'s shape and dtype (either byte order), writable.
        It may be ``x`` itself (in place); otherwise it must not share
        memory with any other argument.

    Returns
    -------
    y : ndarray
        The normalized batch, ``x``'s shape and dtype; ``out`` itself when
        given, else the caller's array type.
    mean : ndarray
        The mean per (sample, group), shape ``(N, num_groups)``; float32
        (float64 for float64 ``x``).
    invstd : ndarray
        ``1/√(var + eps)``; shape and dtype of ``mean``.

    Raises
    ------
    TypeError
        If ``x`` is None; if an array argument has an unsupported dtype (not
        float16/32/64); if ``num_groups`` or ``channel_axis`` is not an int
        or ``eps`` not a real number; if the arrays are not all on one
        device; if ``out`` is not an array that can be written in place.
    ValueError
        If ``x`` has fewer than 2 dimensions or no element; if
        ``channel_axis`` is 0; if ``num_groups`` is not positive or does not
        divide C; if ``weight`` or ``bias`` is not of shape ``(C,)``; if
        ``out`` differs from ``x`` in shape or dtype, is read-only, has
        overlapping elements or shares memory with another argument (other
        than being exactly ``x``); if ``eps`` is negative or not finite.
    numpy.exceptions.AxisError
        If ``channel_axis`` is out of range for ``x.ndim``.

    See Also
    --------
    group_norm_backward : The gradients of this function.
    instance_norm : One channel per group.
    GroupNorm : A layer with PyTorch's semantics.

    Examples
    --------
    Two samples of 4 channels of length 3, in 2 groups of 2 channels:

    >>> x = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 3.0], [3.0, 6.0, 6.0]],
    ...               [[2.0, 2.0, 2.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]],
    ...              dtype=np.float32)
    >>> y, mean, invstd = nbnorm.group_norm(x, 2)
    >>> mean
    array([[3.5, 3. ],
           [3. , 2. ]], dtype=float32)
    >>> np.round(y[0], 3)
    array([[-1.464, -0.878, -0.293],
           [ 0.293,  0.878,  1.464],
           [-1.225, -1.225,  0.   ],
           [ 0.   ,  1.225,  1.225]], dtype=float32)

    Channels-last gives the same statistics:

    >>> y_last, mean_last, _ = nbnorm.group_norm(np.moveaxis(x, 1, -1), 2, channel_axis=-1)
    >>> bool(np.allclose(np.moveaxis(y_last, -1, 1), y)), bool(np.allclose(mean_last, mean))
    (True, True)
    """
    return _run("group_norm", _FORWARD, (x, weight, bias, out), (num_groups, channel_axis, eps),
                _forward, _groups(channel_axis, num_groups), eps, False, _PER_CHANNEL,
                _y_mean_invstd)


def group_norm_backward(dy, x, mean, invstd, num_groups, weight=None, *, channel_axis=1,
                        out=None):
    """Gradients of :func:`group_norm`: the per-channel affine inside a
    per-group statistic.

    With ``g = dy·weight[c]``, ``x̂ = (x − mean)·invstd`` and sums over the
    ``n = C/G·(spatial size)`` values of group ``(n, g)``::

        dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n),
        dweight[c] = Σ_{n, spatial} dy·x̂,  dbias[c] = Σ_{n, spatial} dy.

    Parameters
    ----------
    dy : array_like
        The gradient of the loss with respect to ``y``: ``x``'s shape and dtype.
    x : array_like
        The forward's input, ``(N, C, …)`` (or channels-last): float16,
        float32 or float64, at least one element; a NumPy (or
        ``np.asarray``-readable) or CUDA array, every array argument on the
        same device.
    mean : array_like
        The forward's ``mean``, shape ``(N, num_groups)``, float16/32/64.
    invstd : array_like
        The forward's ``invstd``, shape ``(N, num_groups)``, float16/32/64.
    num_groups : int
        The forward's number of groups, a positive divisor of C.
    weight : array_like, optional
        The forward's scale, shape ``(C,)``, float16/32/64.  None (the
        default) is 1.
    channel_axis : int, optional
        The forward's channel axis (default 1; -1 for channels-last; never 0).
    out : ndarray, optional
        Receives ``dx``: ``x``'s shape and dtype (either byte order),
        writable.  It may be ``dy`` or ``x`` itself; otherwise it must not
        share memory with any other argument.

    Returns
    -------
    dx : ndarray
        The gradient with respect to ``x``, ``x``'s shape and dtype; ``out``
        itself when given, else the caller's array type.
    dweight : ndarray
        ``Σ dy·x̂`` per channel, shape ``(C,)``; float32 (float64 for float64
        ``x``).  Returned also when ``weight`` is None.
    dbias : ndarray
        ``Σ dy`` per channel; shape and dtype of ``dweight``.

    Raises
    ------
    TypeError
        If ``dy``, ``x``, ``mean`` or ``invstd`` is None; if an array
        argument has an unsupported dtype (not float16/32/64) or ``dy``'s
        dtype differs from ``x``'s; if ``num_groups`` or ``channel_axis`` is
        not an int; if the arrays are not all on one device; if ``out`` is
        not an array that can be written in place.
    ValueError
        If ``dy``'s shape differs from ``x``'s, ``mean``'s or ``invstd``'s
        from ``(N, num_groups)``, or ``weight``'s from ``(C,)``; if ``x`` has
        fewer than 2 dimensions or no element; if ``channel_axis`` is 0; if
        ``num_groups`` is not positive or does not divide C; if ``out``
        differs from ``x`` in shape or dtype, is read-only, has overlapping
        elements or shares memory with another argument (other than being
        exactly ``dy`` or ``x``).
    numpy.exceptions.AxisError
        If ``channel_axis`` is out of range for ``x.ndim``.

    See Also
    --------
    group_norm : The forward.
    GroupNorm.backward : The same through a layer.

    Examples
    --------
    >>> x = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 3.0], [3.0, 6.0, 6.0]],
    ...               [[2.0, 2.0, 2.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]],
    ...              dtype=np.float32)
    >>> weight = np.array([1.0, 2.0, 0.5, 1.0], dtype=np.float32)
    >>> y, mean, invstd = nbnorm.group_norm(x, 2, weight)
    >>> dy = np.ones_like(x)
    >>> dy[:, :, 0] = -1.0
    >>> dx, dweight, dbias = nbnorm.group_norm_backward(dy, x, mean, invstd, 2, weight)
    >>> dx.shape
    (2, 4, 3)
    >>> np.round(dweight, 3)
    array([-0.707,  3.049,  2.449,  4.899], dtype=float32)
    >>> dbias
    array([2., 2., 2., 2.], dtype=float32)
    """
    return _run("group_norm_backward", _BACKWARD, (dy, x, mean, invstd, weight, out),
                (num_groups, channel_axis), _backward, _groups(channel_axis, num_groups), False,
                _PER_CHANNEL, _dx_dweight_dbias)


# --------------------------------------------------------------- instance
def instance_norm(x, weight=None, bias=None, *, channel_axis=1, eps=1e-5, running_mean=None,
                  running_var=None, momentum=0.1, out=None):
    """Instance normalization: group norm with one channel per group;
    ``mean``/``invstd`` of shape ``(N, C)``.

    ``y = (x − mean)·invstd·weight + bias`` with statistics per (sample,
    channel) over the remaining axes, the biased variance and
    ``invstd = 1/√(var + eps)``.

    ``running_mean``/``running_var`` (shape ``(C,)``), when given, are updated
    in place as ``torch.nn.functional.instance_norm`` does: with the batch
    average of the per-instance means and *unbiased* variances,
    ``r ← (1 − momentum)·r + momentum·avg``; instances whose statistics are
    not finite leave the channel unchanged with a ``RuntimeWarning``.

    Parameters
    ----------
    x : array_like
        The batch, ``(N, C, …)`` (or channels-last with ``channel_axis=-1``):
        float16, float32 or float64, at least 2 dimensions and one element.
        A NumPy array or anything ``np.asarray`` reads runs on the CPU, a
        CUDA array on the GPU; every array argument must be on the same device.
    weight : array_like, optional
        The scale, one per channel: shape ``(C,)``, float16/32/64.  None
        (the default) is 1.
    bias : array_like, optional
        The shift, shape ``(C,)``.  None (the default) is 0.
    channel_axis : int, optional
        The channel axis of ``x``: 1 (the default), or -1 for channels-last;
        never 0, the batch axis.
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    running_mean : ndarray, optional
        Shape ``(C,)``, a float array updated in place; pass both running
        statistics or neither.  It must be writable, an array of ``x``'s
        device (a NumPy array for host ``x``) with no overlapping elements,
        and share no memory with another argument; updating needs at least
        2 values per instance.
    running_var : ndarray, optional
        As ``running_mean``, updated with the unbiased instance variances.
    momentum : float, optional
        The weight of the batch average in the running update, in
        ``[0, 1]`` (default 0.1).
    out : ndarray, optional
        Receives ``y``: ``x``'s shape and dtype (either byte order), writable.
        It may be ``x`` itself (in place); otherwise it must not share
        memory with any other argument.

    Returns
    -------
    y : ndarray
        The normalized batch, ``x``'s shape and dtype; ``out`` itself when
        given, else the caller's array type.
    mean : ndarray
        The mean per (sample, channel), shape ``(N, C)``; float32 (float64
        for float64 ``x``).
    invstd : ndarray
        ``1/√(var + eps)``; shape and dtype of ``mean``.

    Raises
    ------
    TypeError
        If ``x`` is None; if an array argument has an unsupported dtype (not
        float16/32/64); if ``channel_axis`` is not an int or ``eps`` or
        ``momentum`` not a real number; if the arrays are not all on one
        device; if ``out`` or a running statistic is not an array that can
        be written in place.
    ValueError
        If ``x`` has fewer than 2 dimensions or no element; if
        ``channel_axis`` is 0; if ``weight``, ``bias`` or a running statistic
        is not of shape ``(C,)``; if only one running statistic is given, or
        they are given with a single value per instance; if ``out`` differs
        from ``x`` in shape or dtype; if ``out`` or a running statistic is
        read-only, has overlapping elements or shares memory with another
        argument (other than ``out`` being exactly ``x``); if ``eps`` is
        negative or not finite or ``momentum`` outside ``[0, 1]``.
    numpy.exceptions.AxisError
        If ``channel_axis`` is out of range for ``x.ndim``.

    Warns
    -----
    RuntimeWarning
        If an instance's statistics are not finite; the running entries of
        its channel are left unchanged.

    See Also
    --------
    instance_norm_backward : The gradients of this function.
    group_norm : Several channels per group.
    InstanceNorm : A layer with PyTorch's semantics.

    Examples
    --------
    >>> x = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 3.0], [3.0, 6.0, 6.0]],
    ...               [[2.0, 2.0, 2.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]],
    ...              dtype=np.float32)
    >>> y, mean, invstd = nbnorm.instance_norm(x)
    >>> mean
    array([[2., 5., 1., 5.],
           [2., 4., 2., 2.]], dtype=float32)

    With running statistics, updated in place:

    >>> running_mean = np.zeros(4, np.float32)
    >>> running_var = np.ones(4, np.float32)
    >>> _ = nbnorm.instance_norm(x, running_mean=running_mean, running_var=running_var)
    >>> running_mean
    array([0.2 , 0.45, 0.15, 0.35], dtype=float32)
    >>> running_var
    array([0.95, 0.95, 1.1 , 1.1 ], dtype=float32)
    """
    if type(momentum) is not float or not 0.0 <= momentum <= 1.0:  # else valid as it is
        momentum = V.momentum_value(momentum)
    return _run("instance_norm", _RUNNING, (x, weight, bias, running_mean, running_var, out),
                (channel_axis, eps, momentum), _forward, _instances(channel_axis), eps, False,
                _PER_CHANNEL, _y_mean_invstd if running_mean is None and running_var is None
                else lambda *r: _instance_finish(momentum, *r), _check_running)


def _instance_finish(momentum, backend, arrays, geo, y, mean, var, inv, x, out):
    """Results of :func:`instance_norm`, the running statistics updated."""
    running_mean, running_var = arrays[3:5]        # _RUNNING's order
    if running_mean is not None:
        n = geo.n
        skipped = 0
        for running, stat, scale in ((running_mean, mean, 1.0), (running_var, var, n / (n - 1))):
            batch, _ = backend.moments(stat, (0,), 0)       # the batch average, on x's device
            skipped += backend.update_running(running, batch, momentum, scale)
        if skipped:
            warnings.warn("instance_norm: non-finite instance statistics; running_mean/"
                          "running_var left unchanged where they occur", RuntimeWarning,
                          stacklevel=5)
    return _y_mean_invstd(backend, arrays, geo, y, mean, var, inv, x, out)


def _check_running(a, xa, geo):
    if (a["running_mean"] is None) != (a["running_var"] is None):
        raise ValueError("running_mean, running_var: pass both or neither")
    if a["running_mean"] is None:
        return
    for name in ("running_mean", "running_var"):
        V.float_input(a[name], name)
        V.shape_is(a[name], name, geo.param_shape, _PER_CHANNEL)
        V.writable(a[name], name)
    if geo.n < 2:
        raise ValueError(f"x: expected more than 1 spatial element per instance to update "
                         f"running statistics, got {geo.n} (x.shape {tuple(xa.shape)})")


def instance_norm_backward(dy, x, mean, invstd, weight=None, *, channel_axis=1, out=None):
    """Gradients of :func:`instance_norm` (:func:`group_norm_backward` with
    one channel per group).

    Parameters
    ----------
    dy : array_like
        The gradient of the loss with respect to ``y``: ``x``'s shape and dtype.
    x : array_like
        The forward's input, ``(N, C, …)`` (or channels-last): float16,
        float32 or float64, at least one element; a NumPy (or
        ``np.asarray``-readable) or CUDA array, every array argument on the
        same device.
    mean : array_like
        The forward's ``mean``, shape ``(N, C)``, float16/32/64.
    invstd : array_like
        The forward's ``invstd``, shape ``(N, C)``, float16/32/64.
    weight : array_like, optional
        The forward's scale, shape ``(C,)``, float16/32/64.  None (the
        default) is 1.
    channel_axis : int, optional
        The forward's channel axis (default 1; -1 for channels-last; never 0).
    out : ndarray, optional
        Receives ``dx``: ``x``'s shape and dtype (either byte order),
        writable.  It may be ``dy`` or ``x`` itself; otherwise it must not
        share memory with any other argument.

    Returns
    -------
    dx : ndarray
        The gradient with respect to ``x``, ``x``'s shape and dtype; ``out``
        itself when given, else the caller's array type.
    dweight : ndarray
        ``Σ dy·x̂`` per channel, shape ``(C,)``; float32 (float64 for float64
        ``x``).  Returned also when ``weight`` is None.
    dbias : ndarray
        ``Σ dy`` per channel; shape and dtype of ``dweight``.

    Raises
    ------
    TypeError
        If ``dy``, ``x``, ``mean`` or ``invstd`` is None; if an array
        argument has an unsupported dtype (not float16/32/64) or ``dy``'s
        dtype differs from ``x``'s; if ``channel_axis`` is not an int; if
        the arrays are not all on one device; if ``out`` is not an array
        that can be written in place.
    ValueError
        If ``dy``'s shape differs from ``x``'s, ``mean``'s or ``invstd``'s
        from ``(N, C)``, or ``weight``'s from ``(C,)``; if ``x`` has fewer
        than 2 dimensions or no element; if ``channel_axis`` is 0; if
        ``out`` differs from ``x`` in shape or dtype, is read-only, has
        overlapping elements or shares memory with another argument (other
        than being exactly ``dy`` or ``x``).
    numpy.exceptions.AxisError
        If ``channel_axis`` is out of range for ``x.ndim``.

    See Also
    --------
    instance_norm : The forward.
    group_norm_backward : The same with several channels per group.

    Examples
    --------
    >>> x = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 3.0], [3.0, 6.0, 6.0]],
    ...               [[2.0, 2.0, 2.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]],
    ...              dtype=np.float32)
    >>> y, mean, invstd = nbnorm.instance_norm(x)
    >>> dy = np.ones_like(x)
    >>> dy[:, :, 0] = -1.0
    >>> dx, dweight, dbias = nbnorm.instance_norm_backward(dy, x, mean, invstd)
    >>> dx.shape
    (2, 4, 3)
    >>> np.round(dweight, 3)
    array([2.449, 2.449, 3.864, 5.278], dtype=float32)
    >>> dbias
    array([2., 2., 2., 2.], dtype=float32)
    """
    return _run("instance_norm_backward", _BACKWARD, (dy, x, mean, invstd, weight, out),
                (channel_axis,), _backward, _instances(channel_axis), False, _PER_CHANNEL,
                _dx_dweight_dbias)


# -------------------------------------------------------------------- RMS
def rms_norm(x, weight=None, *, axis=-1, eps=None, out=None):
    """RMS normalization over ``axis``: ``rstd = 1/√(mean(x²) + eps)``,
    ``y = x·rstd·weight``; ``eps=None`` is ``np.finfo(x.dtype).eps`` (as
    PyTorch).  Returns ``(y, rstd)``.

    Parameters
    ----------
    x : array_like
        The data: float16, float32 or float64, any shape with at least one
        element.  A NumPy array or anything ``np.asarray`` reads runs on the
        CPU, a CUDA array on the GPU; every array argument must be on the
        same device.
    weight : array_like, optional
        The scale, of the normalized dims' shape
        ``tuple(x.shape[a] for a in sorted(axis))`` (``x.shape[-1:]`` for
        the default ``axis``), float16/32/64.  None (the default) is 1.
    axis : int, tuple of int or None, optional
        The dimensions normalized over, any non-empty subset (default -1,
        the last); negative values count from the end; None is every axis.
    eps : float or None, optional
        Added to ``mean(x²)`` before the square root; finite and ≥ 0.  None
        (the default) is the machine epsilon of ``x``'s dtype.
    out : ndarray, optional
        Receives ``y``: ``x``'s shape and dtype (either byte order), writable.
        It may be ``x`` itself (in place); otherwise it must not share
        memory with any other argument.

    Returns
    -------
    y : ndarray
        The normalized data, ``x``'s shape and dtype; ``out`` itself when
        given, else the caller's array type.
    rstd : ndarray
        ``1/√(mean(x²) + eps)`` per statistic, of ``x.shape`` without the
        ``axis`` dimensions; float32 (float64 for float64 ``x``).

    Raises
    ------
    TypeError
        If ``x`` is None; if an array argument has an unsupported dtype (not
        float16/32/64); if ``eps`` is not a real number or None, or ``axis``
        not an int or a tuple of ints; if the arrays are not all on one
        device; if ``out`` is not an array that can be written in place.
    ValueError
        If ``weight`` does not have the normalized dims' shape; if ``out``
        differs from ``x`` in shape or dtype, is read-only, has overlapping
        elements or shares memory with another argument (other than being
        exactly ``x``); if ``eps`` is negative or not finite; if ``x`` has
        no element; if ``axis`` is empty or names a dimension twice.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    See Also
    --------
    rms_norm_backward : The gradients of this function.
    layer_norm : Normalization by the mean and variance.
    RMSNorm : A layer with PyTorch's semantics.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 2.0, 4.0], [3.0, 0.0, 4.0, 0.0]], dtype=np.float32)
    >>> y, rstd = nbnorm.rms_norm(x, eps=0.0)
    >>> rstd
    array([0.4, 0.4], dtype=float32)
    >>> np.round(y, 3)
    array([[0.4, 0.8, 0.8, 1.6],
           [1.2, 0. , 1.6, 0. ]], dtype=float32)
    """
    return _run("rms_norm", _RMS, (x, weight, out), (axis, eps), _forward, _over_axes(axis), eps,
                True, _NORMALIZED, _y_rstd)


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`rms_norm`.

    With ``r = rstd``, ``g = weight·dy`` and sums over the ``N`` normalized
    values of a statistic::

        dx = r·g − (r³/N)·x·Σ(g·x),  dweight = Σ dy·x·r  (over the other axes).

    Returns ``(dx, dweight)``.

    Parameters
    ----------
    dy : array_like
        The gradient of the loss with respect to ``y``: ``x``'s shape and dtype.
    x : array_like
        The forward's input: float16, float32 or float64, at least one
        element; a NumPy (or ``np.asarray``-readable) or CUDA array, every
        array argument on the same device.
    rstd : array_like
        The forward's ``rstd``: ``x.shape`` without the ``axis``
        dimensions, float16/32/64.
    weight : array_like, optional
        The forward's scale, of the normalized dims' shape
        ``tuple(x.shape[a] for a in sorted(axis))``, float16/32/64.  None
        (the default) is 1.
    axis : int, tuple of int or None, optional
        The forward's ``axis`` (default -1).
    out : ndarray, optional
        Receives ``dx``: ``x``'s shape and dtype (either byte order),
        writable.  It may be ``dy`` or ``x`` itself; otherwise it must not
        share memory with any other argument.

    Returns
    -------
    dx : ndarray
        The gradient with respect to ``x``, ``x``'s shape and dtype; ``out``
        itself when given, else the caller's array type.
    dweight : ndarray
        ``Σ dy·x·r`` over the other axes, of the normalized dims' shape;
        float32 (float64 for float64 ``x``).  Returned also when ``weight``
        is None.

    Raises
    ------
    TypeError
        If ``dy``, ``x`` or ``rstd`` is None; if an array argument has an
        unsupported dtype (not float16/32/64) or ``dy``'s dtype differs from
        ``x``'s; if ``axis`` is not an int or a tuple of ints; if the arrays
        are not all on one device; if ``out`` is not an array that can be
        written in place.
    ValueError
        If ``dy``'s shape differs from ``x``'s, ``rstd``'s from the
        statistics' shape, or ``weight``'s from the normalized dims'; if
        ``out`` differs from ``x`` in shape or dtype, is read-only, has
        overlapping elements or shares memory with another argument (other
        than being exactly ``dy`` or ``x``); if ``x`` has no element; if
        ``axis`` is empty or names a dimension twice.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    See Also
    --------
    rms_norm : The forward.
    RMSNorm.backward : The same through a layer.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 2.0, 4.0], [3.0, 0.0, 4.0, 0.0]], dtype=np.float32)
    >>> y, rstd = nbnorm.rms_norm(x, eps=0.0)
    >>> dy = np.array([[1.0, 0.0, 0.0, -1.0], [0.5, 0.5, -0.5, -0.5]], dtype=np.float32)
    >>> dx, dweight = nbnorm.rms_norm_backward(dy, x, rstd)
    >>> np.round(dx, 3)
    array([[ 0.448,  0.096,  0.096, -0.208],
           [ 0.224,  0.2  , -0.168, -0.2  ]], dtype=float32)
    >>> np.round(dweight, 3)
    array([ 1. ,  0. , -0.8, -1.6], dtype=float32)
    """
    return _run("rms_norm_backward", _RMS_BACKWARD, (dy, x, rstd, weight, out), (axis,),
                _backward, _over_axes(axis), True, _NORMALIZED, _dx_dweight)
