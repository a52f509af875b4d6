"""Public functions: validate, route to a backend, return the caller's array type.

Shapes: ``x`` has any shape; ``axis`` names the dimensions reduced over; a
*statistic* has ``x.shape`` with the ``axis`` dimensions removed (as
``np.mean(x, axis)``), and ``mean``, ``var``, ``invstd``, ``weight``,
``bias``, ``running_*``, ``dweight`` and ``dbias`` all have that shape.
"""
from __future__ import annotations

import warnings
from math import prod

import numpy as np

from . import _router
from . import _validate as V
from ._calls import aliasing_check, calls, moments_key, prepared_op, signature
from ._contract import LazyForward, implements
from ._layout import normalize_axis, stat_shape

__all__ = ["moments", "batch_norm_forward", "batch_norm_inference", "batch_norm_backward"]


_OUTPUTS = ("out", "running_mean", "running_var")


def _setup(fname, x, **others):
    """Route the call; returns the backend, the converted arrays and ``x``'s.
    ``out`` and ``running_*`` are written in place, the rest is read."""
    if x is None:
        raise TypeError(f"{fname}: x is required, got None")
    backend, arrays = _router.dispatch(outputs=_OUTPUTS, x=x, **others)
    xa = arrays["x"]
    return backend, arrays, xa


def _check_aliasing(converted, exact_ok):
    """No output may share memory with another argument (see
    :func:`_validate.no_aliasing`); checked on the arrays the backend works
    on, so an input that was converted by a copy aliases nothing."""
    outputs = {k: converted[k] for k in _OUTPUTS if k in converted}
    inputs = {k: v for k, v in converted.items() if k not in outputs}
    V.no_aliasing(outputs, inputs, exact_ok)


def _native_out(out):
    """``(out for the backend, out to copy into afterwards)``: a byte-swapped
    ``out``, or a NumPy ``out`` whose strides are not whole elements (a field
    of a packed record array), is computed into a fresh array and copied at
    the end."""
    if out is None or (np.dtype(out.dtype).isnative and not _odd_strides(out)):
        return out, None
    return None, out


def _odd_strides(a):
    return isinstance(a, np.ndarray) and any(s % a.itemsize for s in a.strides)


def _result(backend, y, x, out):
    """What a function returns for its output ``y``: the caller's ``out``
    object itself when one was given (a ``np.memmap`` stays the memmap),
    else ``y`` as the caller's kind of array."""
    return backend.wrap(y, x) if out is None else out


def _deliver(y, late_out):
    if late_out is None:
        return y
    late_out[...] = y
    return late_out


def moments(x, axis=None, *, ddof=0, keepdims=False, skipna=False, by=None):
    """Mean and variance of ``x`` over ``axis`` in one pass (Welford/Chan).

    ``mean = Σx/n`` and ``var = Σ(x − mean)²/(n − ddof)`` with ``n`` the
    number of elements reduced into each statistic; ``axis=None`` reduces
    over all axes.  float16/float32 input gives float32 statistics, float64
    (and promoted integer/bool) input gives float64.  An empty reduction
    gives NaN with a ``RuntimeWarning``, as NumPy does.  With ``skipna``,
    NaNs are left out and ``n`` is counted per statistic (``np.nanmean``,
    ``np.nanvar``); a statistic with ``n − ddof ≤ 0`` is NaN with a warning.

    Parameters
    ----------
    x : array_like
        The data, of any shape: float16, float32 or float64 (integer and
        bool input is promoted to float64).  A NumPy array or anything
        ``np.asarray`` reads runs on the CPU, a CUDA array (one exposing
        ``__cuda_array_interface__``) on the GPU, a Dask array chunk by chunk.
    axis : int, tuple of int or None, optional
        The dimensions reduced over (negative ones count from the end);
        ``None``, the default, reduces over every axis.
    ddof : float, optional
        Delta degrees of freedom: the variance's divisor is ``n − ddof``
        (0, the default, gives the biased variance; 1 the unbiased one).
    keepdims : bool, optional
        If True, the reduced dimensions are kept with size 1, as NumPy's
        ``keepdims`` (default False).
    skipna : bool, optional
        If True, NaNs are left out of each statistic, as ``np.nanmean`` and
        ``np.nanvar`` (default False).
    by : array_like of int, optional
        One integer label per index of the labelled axis (``axis`` itself,
        or its first entry): statistics per group of equal labels (a
        climatology by month), negative labels left out.  The results then
        have a leading dimension of the sorted distinct non-negative labels
        (``np.unique`` order), then ``x.shape`` without ``axis``.  NumPy,
        CUDA and Dask arrays; not with ``keepdims``.

    Returns
    -------
    mean : ndarray
        The mean per statistic, of the statistic shape (``x.shape`` without
        the ``axis`` dimensions, or with size-1 dimensions there when
        ``keepdims``; a 0-d array for ``axis=None``); float32 for float16 and
        float32 ``x``, float64 otherwise; the caller's array type (a CuPy
        ``x`` gives CuPy statistics, a Dask ``x`` Dask ones).
    var : ndarray
        The variance with divisor ``n − ddof``; shape and dtype of ``mean``.

    Raises
    ------
    TypeError
        If ``x`` is None, a masked array or of an unsupported dtype
        (complex, object, strings, datetimes), if ``ddof`` is not a real
        number, or if ``axis`` is not an int, a tuple of ints or None, or
        ``by`` holds no integers.
    ValueError
        If ``axis`` names a dimension twice, or ``by`` is not one label per
        index of the labelled axis (or given with ``axis=None`` or
        ``keepdims``).
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    Warns
    -----
    RuntimeWarning
        If a statistic reduces over no element, or ``n − ddof ≤ 0``: that
        statistic is NaN.

    See Also
    --------
    Moments : Mergeable ``(count, mean, m2)`` states, for data in batches or chunks.
    batch_norm_forward : Normalization with the batch's statistics.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
    >>> mean, var = nbnorm.moments(x, axis=1)
    >>> mean
    array([2., 6.])
    >>> var
    array([0.66666667, 0.66666667])

    The unbiased variance, with the reduced axis kept:

    >>> mean, var = nbnorm.moments(x, axis=1, ddof=1, keepdims=True)
    >>> var.shape
    (2, 1)

    float16 input gives float32 statistics; ``skipna`` leaves NaNs out:

    >>> nbnorm.moments(np.arange(6, dtype=np.float16).reshape(2, 3), axis=0)[0]
    array([1.5, 2.5, 3.5], dtype=float32)
    >>> nbnorm.moments(np.array([1.0, np.nan, 3.0]), skipna=True)
    (array(2.), array(1.))

    Per group of a labelled axis (label ``-1`` left out):

    >>> nbnorm.moments(np.array([1.0, 2.0, 10.0, 20.0, 99.0]), 0, by=[0, 0, 1, 1, -1])[0]
    array([ 1.5, 15. ])
    """
    if by is not None:
        from . import _grouped
        return _grouped.moments(x, axis, ddof, keepdims, skipna, by)
    key = moments_key(x, axis, ddof, keepdims, skipna)
    call = calls.get(key)
    if call is not None:
        return call(x)
    backend, arrays, xa = _setup("moments", x)
    V.float_input(xa, "x", allow_int=True)
    ddof = V.ddof_value(ddof)
    ax = normalize_axis(axis, xa.ndim)
    if np.dtype(xa.dtype).kind in "iub":
        xa = backend.astype(xa, np.float64)
    if skipna:
        count, mean, m2, _ = backend.moment_state(xa, ax, True)
        var, short = backend.state_variance(count, m2, ddof)
        if short:
            warnings.warn("moments: Degrees of freedom <= 0 for slice (all-NaN or too few "
                          "values)", RuntimeWarning, stacklevel=2)
        sd = backend.stat_dtype(xa.dtype)
        mean, var = backend.astype(mean, sd), backend.astype(var, sd)
    else:
        n = prod(xa.shape[d] for d in ax)
        if n - ddof <= 0 and prod(stat_shape(xa.shape, ax)) > 0:
            msg = "Mean of empty slice" if n == 0 else "Degrees of freedom <= 0 for slice"
            warnings.warn(f"moments: {msg}", RuntimeWarning, stacklevel=2)
        call = _moments_call(backend, xa, ax, ddof, keepdims)
        mean, var = call(xa)
        if key is not None and xa is x and n - ddof > 0 and backend.remembers_calls:
            calls.put(key, call)
        return backend.wrap(mean, x), backend.wrap(var, x)
    if keepdims:
        mean, var = _kept(mean, ax, xa.shape), _kept(var, ax, xa.shape)
    return backend.wrap(mean, x), backend.wrap(var, x)


def _kept(stat, ax, shape):
    """A statistic reshaped as ``keepdims=True`` gives it (reduced dims of size 1)."""
    # indexing, not reshape: a Dask statistic may have unknown (NaN) sizes
    return stat[tuple(None if d in ax else slice(None) for d in range(len(shape)))]


def _moments_call(backend, x, ax, ddof, keepdims):
    """``(mean, var)`` of arrays of one signature on ``backend``, arguments
    checked; remembered for plain float NumPy arrays (see :mod:`._calls`)."""
    launch = prepared_op(backend, "moments", x, ax, ddof,
                         fallback=lambda x: backend.moments(x, ax, ddof))

    def call(x):
        mean, var = launch(x)
        if keepdims:
            return _kept(mean, ax, x.shape), _kept(var, ax, x.shape)
        return mean, var
    return call


_FORWARD = ("x", "weight", "bias", "running_mean", "running_var", "out")
_INFERENCE = ("x", "mean", "var", "weight", "bias", "out")
_BACKWARD = ("dy", "x", "mean", "invstd", "weight", "out")


def _prepared_call(fname, given, x_at, scalars, prepare, *args):
    """Run the prepared call of this call's signature on the arrays ``given``
    (``x`` at ``x_at``, ``out`` last), made first by ``prepare(key, given,
    *args)`` → ``(call, converted arrays)`` when there is none (see :mod:`._calls`)."""
    key = signature(fname, given, scalars)
    call = calls.get(key)
    x, out = given[x_at], given[-1]
    if call is None:
        call, given = prepare(key, given, *args)
    return call(x, out, given)


def _remember(key, call, backend, given, converted, late):
    """Keep the prepared ``call`` of signature ``key`` when the call converted
    no argument (then a later call of that signature needs no conversion
    either); returns ``(call, converted)``."""
    if (key is not None and backend.remembers_calls and late is None
            and all(c is g for c, g in zip(converted, given))):
        calls.put(key, call)
    return call, converted


def _aliasing(names, exact_ok):
    """The per-call check of :func:`_check_aliasing` (see :func:`._calls.aliasing_check`)."""
    return aliasing_check(names, _OUTPUTS, exact_ok,
                          lambda arrays: _check_aliasing(dict(zip(names, arrays)), exact_ok))


def _late(o, late):
    """``(out for the backend, out to copy into)`` of one call (see :func:`_native_out`)."""
    return (None, o) if late is not None and o is not None else (o, None)


def batch_norm_forward(x, weight=None, bias=None, *, axis, eps=1e-5, running_mean=None,
                       running_var=None, momentum=0.1, out=None):
    """Training-mode batch normalization over ``axis``.

    ``y = (x − mean)·invstd·weight + bias`` with the batch's biased variance
    and ``invstd = 1/√(var + eps)``.  Returns ``(y, mean, invstd)``: ``y`` of
    ``x``'s shape and dtype; ``mean``/``invstd`` statistic-shaped, float32
    (float64 for float64 ``x``) — what :func:`batch_norm_backward` needs.

    ``running_mean``/``running_var``, when given, are updated in place as in
    PyTorch: ``r ← (1 − momentum)·r + momentum·stat`` with the *unbiased*
    variance ``var·n/(n − 1)`` for ``running_var``.  Statistics that are not
    finite (NaN/inf in the batch) leave their running entries unchanged and
    raise a ``RuntimeWarning``.  ``out`` receives ``y`` (it may be ``x``).

    Parameters
    ----------
    x : array_like
        The batch: float16, float32 or float64, any shape with at least one
        element and at least 2 values per statistic.  A NumPy array or
        anything ``np.asarray`` reads runs on the CPU, a CUDA array (one
        exposing ``__cuda_array_interface__``) on the GPU, a Dask array
        chunk by chunk; every array argument must be on the same device.
    weight : array_like, optional
        The scale, statistic-shaped (``x.shape`` without the ``axis``
        dimensions; no size-1 dimensions for the reduced ones), float16,
        float32 or float64.  None (the default) is 1.
    bias : array_like, optional
        The shift, statistic-shaped, float16, float32 or float64.  None (the
        default) is 0.
    axis : int, tuple of int or None
        Keyword-only and required: the dimensions reduced over, e.g.
        ``(0, 2, 3)`` for NCHW ``x`` (per-channel statistics) or ``0`` for
        an ``(N, D)`` batch; negative values count from the end; None
        reduces over every axis (0-d statistics).
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    running_mean : ndarray, optional
        Statistic-shaped float array updated in place with the batch mean;
        pass both running statistics or neither.  It must be writable, an
        array of ``x``'s device (a NumPy array for host ``x``) with no
        overlapping elements, and share no memory with another argument.
    running_var : ndarray, optional
        As ``running_mean``, updated with the unbiased batch variance.
    momentum : float, optional
        The weight of the batch statistic in the running update, in
        ``[0, 1]`` (default 0.1, PyTorch's).
    out : ndarray, optional
        Receives ``y``: ``x``'s shape and dtype (either byte order), writable.
        It may be ``x`` itself (in place); otherwise it must not share
        memory with any other argument.

    Returns
    -------
    y : ndarray
        The normalized batch, ``x``'s shape and dtype; ``out`` itself when
        given.  Results are the caller's array type (a CuPy or PyTorch CUDA
        ``x`` gives CuPy or PyTorch results, a Dask ``x`` Dask ones).
    mean : ndarray
        The batch mean, statistic-shaped; float32 (float64 for float64 ``x``).
    invstd : ndarray
        ``1/√(var + eps)`` of the biased batch variance; shape and dtype of
        ``mean``.

    Raises
    ------
    TypeError
        If ``x`` is None; if ``x``, ``weight``, ``bias`` or a running
        statistic has an unsupported dtype (not float16/32/64); if ``eps`` or
        ``momentum`` is not a real number or ``axis`` not an int or a tuple
        of ints; if the arrays are not all on one device; if ``out`` or a
        running statistic is not an array that can be written in place (a
        list, a masked array).
    ValueError
        If ``weight``, ``bias`` or a running statistic is not
        statistic-shaped; if only one running statistic is given; if ``out``
        differs from ``x`` in shape or dtype; if ``out`` or a running
        statistic is read-only, has overlapping elements, or shares memory
        with another argument (other than ``out`` being exactly ``x``); if
        ``eps`` is negative or not finite or ``momentum`` outside ``[0, 1]``;
        if ``x`` has no element or fewer than 2 values per statistic; if
        ``axis`` names a dimension twice.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    Warns
    -----
    RuntimeWarning
        If a batch statistic is not finite; its running entries are left
        unchanged.

    See Also
    --------
    batch_norm_backward : The gradients of this function.
    batch_norm_inference : Normalization with given (running) statistics.
    moments : The batch statistics alone.
    BatchNorm : A layer with PyTorch's semantics on these functions.

    Examples
    --------
    Per-feature statistics of an ``(N, D)`` batch (reduced over axis 0):

    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]], dtype=np.float32)
    >>> y, mean, invstd = nbnorm.batch_norm_forward(x, axis=0)
    >>> mean
    array([3., 6.], dtype=float32)
    >>> np.round(invstd, 4)
    array([0.6124, 0.3062], dtype=float32)
    >>> np.round(y, 3)
    array([[-1.225, -1.225],
           [ 0.   ,  0.   ],
           [ 1.225,  1.225]], dtype=float32)

    With an affine map and running statistics, updated in place:

    >>> weight = np.array([2.0, 1.0], dtype=np.float32)
    >>> bias = np.array([0.5, 0.0], dtype=np.float32)
    >>> running_mean = np.zeros(2, np.float32)
    >>> running_var = np.ones(2, np.float32)
    >>> y, mean, invstd = nbnorm.batch_norm_forward(
    ...     x, weight, bias, axis=0, running_mean=running_mean, running_var=running_var)
    >>> np.round(y, 3)
    array([[-1.949, -1.225],
           [ 0.5  ,  0.   ],
           [ 2.949,  1.225]], dtype=float32)
    >>> running_mean
    array([0.3, 0.6], dtype=float32)
    >>> running_var
    array([1.3, 2.5], dtype=float32)

    In place, and the statistic shape of an NCHW batch:

    >>> x4 = np.random.default_rng(0).normal(size=(8, 3, 4, 4)).astype(np.float32)
    >>> y, mean, invstd = nbnorm.batch_norm_forward(x4, axis=(0, 2, 3), out=x4)
    >>> y is x4, mean.shape
    (True, (3,))
    """
    return _prepared_call("batch_norm_forward", (x, weight, bias, running_mean, running_var, out),
                          0, (axis, eps, momentum), _prepare_forward, axis, eps, momentum)


def _prepare_forward(key, given, axis, eps, momentum):
    x, weight, bias, running_mean, running_var, out = given
    backend, a, xa = _setup("batch_norm_forward", x, weight=weight, bias=bias,
                            running_mean=running_mean, running_var=running_var, out=out)
    V.float_input(xa, "x")
    ax = normalize_axis(axis, xa.ndim)
    sshape = stat_shape(xa.shape, ax)
    for name in ("weight", "bias", "running_mean", "running_var"):
        V.stat_array(a[name], name, sshape, ax)
    if (a["running_mean"] is None) != (a["running_var"] is None):
        raise ValueError("running_mean, running_var: pass both or neither")
    for name in ("running_mean", "running_var"):
        if a[name] is not None:
            V.writable(a[name], name)
    V.out_array(a["out"], xa)
    _check_aliasing(a, [("out", "x")])
    eps = V.eps_value(eps)
    momentum = V.momentum_value(momentum)
    n = prod(xa.shape[d] for d in ax)
    if prod(xa.shape) == 0:
        raise ValueError(f"x: zero-size input of shape {tuple(xa.shape)}; nothing to normalize")
    if n < 2:
        raise ValueError(
            f"x: expected more than 1 value per statistic when training, got {n} "
            f"(x.shape {tuple(xa.shape)} reduced over axis {ax})")
    o, late = _native_out(a["out"])
    if a["running_mean"] is not None and implements(backend, LazyForward):
        # a lazy backend (Dask) computes the statistics now, once, for the update
        def launch(x, w, b, o):
            return backend.forward_with_running(x, w, b, ax, eps, o)
    else:
        launch = prepared_op(backend, "forward", xa, a["weight"], a["bias"], ax, eps, o,
                             fallback=lambda x, w, b, o: backend.forward(x, w, b, ax, eps, o))
    check = _aliasing(_FORWARD, [("out", "x")])
    unbiased = n / (n - 1)

    def call(x_given, out_given, arrays):
        check(arrays)
        xa, w, b, rm, rv, o = arrays
        o, late_out = _late(o, late)
        y, mean, var, invstd = launch(xa, w, b, o)
        y = _deliver(y, late_out)
        if rm is not None:
            skipped = backend.update_running(rm, mean, momentum, 1.0)
            skipped += backend.update_running(rv, var, momentum, unbiased)
            if skipped:
                warnings.warn(
                    "batch_norm_forward: non-finite batch statistics; running_mean/running_var "
                    "left unchanged where they occur", RuntimeWarning, stacklevel=3)
        return (_result(backend, y, x_given, out_given), backend.wrap(mean, x_given),
                backend.wrap(invstd, x_given))
    return _remember(key, call, backend, given, tuple(a[k] for k in _FORWARD), late)


def batch_norm_inference(x, mean, var, weight=None, bias=None, *, axis, eps=1e-5, out=None):
    """Batch normalization with given statistics (no reduction).

    ``y = (x − mean)·α + bias`` with ``α = weight/√(var + eps)``: one
    subtraction and one multiply-add per element.  ``out`` receives ``y`` (it may be ``x``).

    Parameters
    ----------
    x : array_like
        The data: float16, float32 or float64, any shape.  A NumPy array or
        anything ``np.asarray`` reads runs on the CPU, a CUDA array on the
        GPU, a Dask array chunk by chunk; every array argument must be on
        the same device.
    mean : array_like
        The mean to subtract (e.g. a layer's running mean), statistic-shaped
        (``x.shape`` without the ``axis`` dimensions), float16/32/64.
    var : array_like
        The variance (e.g. the running variance), statistic-shaped,
        float16/32/64.
    weight : array_like, optional
        The scale, statistic-shaped, float16/32/64.  None (the default) is 1.
    bias : array_like, optional
        The shift, statistic-shaped, float16/32/64.  None (the default) is 0.
    axis : int, tuple of int or None
        Keyword-only and required: the dimensions the statistics were taken
        over (``(0, 2, 3)`` for NCHW, ``0`` for ``(N, D)``); negative values
        count from the end; None is every axis (0-d statistics).
    eps : float, optional
        Added to ``var`` before the square root; finite and ≥ 0 (default 1e-5).
    out : ndarray, optional
        Receives ``y``: ``x``'s shape and dtype (either byte order), writable.
        It may be ``x`` itself (in place); otherwise it must not share
        memory with any other argument.

    Returns
    -------
    y : ndarray
        The normalized data, ``x``'s shape and dtype; ``out`` itself when
        given, else the caller's array type.

    Raises
    ------
    TypeError
        If ``x``, ``mean`` or ``var`` is None; if an array argument has an
        unsupported dtype (not float16/32/64); if ``eps`` is not a real
        number or ``axis`` not an int or a tuple of ints; if the arrays are
        not all on one device; if ``out`` is not an array that can be
        written in place.
    ValueError
        If ``mean``, ``var``, ``weight`` or ``bias`` is not statistic-shaped;
        if ``out`` differs from ``x`` in shape or dtype, is read-only, has
        overlapping elements or shares memory with another argument (other
        than being exactly ``x``); if ``eps`` is negative or not finite; if
        ``axis`` names a dimension twice.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    See Also
    --------
    batch_norm_forward : Training mode: the batch's own statistics.
    moments : Statistics to normalize with.
    fold_batch_norm : This map folded into the layer before it.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]], dtype=np.float32)
    >>> mean = np.array([3.0, 6.0], dtype=np.float32)
    >>> var = np.array([4.0, 16.0], dtype=np.float32)
    >>> weight = np.array([2.0, 1.0], dtype=np.float32)
    >>> nbnorm.batch_norm_inference(x, mean, var, weight, axis=0, eps=0.0)
    array([[-2., -1.],
           [ 0.,  0.],
           [ 2.,  1.]], dtype=float32)

    In place:

    >>> y = nbnorm.batch_norm_inference(x, mean, var, axis=0, eps=0.0, out=x)
    >>> y is x
    True
    >>> x[:, 0]
    array([-1.,  0.,  1.], dtype=float32)
    """
    return _prepared_call("batch_norm_inference", (x, mean, var, weight, bias, out), 0,
                          (axis, eps), _prepare_inference, axis, eps)


def _prepare_inference(key, given, axis, eps):
    x, mean, var, weight, bias, out = given
    backend, a, xa = _setup("batch_norm_inference", x, mean=mean, var=var,
                            weight=weight, bias=bias, out=out)
    V.float_input(xa, "x")
    ax = normalize_axis(axis, xa.ndim)
    sshape = stat_shape(xa.shape, ax)
    for name in ("mean", "var"):
        if a[name] is None:
            raise TypeError(f"batch_norm_inference: {name} is required, got None")
    for name in ("mean", "var", "weight", "bias"):
        V.stat_array(a[name], name, sshape, ax)
    V.out_array(a["out"], xa)
    _check_aliasing(a, [("out", "x")])
    eps = V.eps_value(eps)
    o, late = _native_out(a["out"])
    launch = prepared_op(backend, "inference", xa, a["mean"], a["var"], a["weight"], a["bias"],
                         ax, eps, o, fallback=lambda x, m, v, w, b, o: backend.inference(
                             x, m, v, w, b, ax, eps, o))
    check = _aliasing(_INFERENCE, [("out", "x")])

    def call(x_given, out_given, arrays):
        check(arrays)
        xa, m, v, w, b, o = arrays
        o, late_out = _late(o, late)
        y = launch(xa, m, v, w, b, o)
        return _result(backend, _deliver(y, late_out), x_given, out_given)
    return _remember(key, call, backend, given, tuple(a[k] for k in _INFERENCE), late)


def batch_norm_backward(dy, x, mean, invstd, weight=None, *, axis, training=True, out=None):
    """Gradients of :func:`batch_norm_forward` (``training=True``) or of
    normalization with frozen statistics (``training=False``).

    With ``x̂ = (x − mean)·invstd``: ``dweight = Σ dy·x̂``, ``dbias = Σ dy`` and

    - training: ``dx = weight·invstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂))``;
    - frozen:   ``dx = dy·weight·invstd``.

    Returns ``(dx, dweight, dbias)``; ``dx`` has ``x``'s dtype (written to
    ``out`` when given; it may be ``dy``), ``dweight``/``dbias`` are
    statistic-shaped float32 (float64 for float64 ``x``).

    Parameters
    ----------
    dy : array_like
        The gradient of the loss with respect to ``y``: ``x``'s shape and dtype.
    x : array_like
        The forward's input: float16, float32 or float64, at least one
        element.  A NumPy array or anything ``np.asarray`` reads runs on the
        CPU, a CUDA array on the GPU, a Dask array chunk by chunk; every
        array argument must be on the same device.
    mean : array_like
        The forward's ``mean`` (frozen: the running mean), statistic-shaped
        (``x.shape`` without the ``axis`` dimensions), float16/32/64.
    invstd : array_like
        The forward's ``invstd`` (frozen: ``1/√(running_var + eps)``),
        statistic-shaped, float16/32/64.
    weight : array_like, optional
        The forward's scale, statistic-shaped, float16/32/64.  None (the
        default) is 1.
    axis : int, tuple of int or None
        Keyword-only and required: the forward's ``axis``.
    training : bool, optional
        True (the default) differentiates through the batch statistics, as
        :func:`batch_norm_forward` computed them; False treats ``mean`` and
        ``invstd`` as constants (eval mode, frozen statistics).
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
        ``Σ dy·x̂`` over the ``axis`` dimensions, statistic-shaped; float32
        (float64 for float64 ``x``).  Returned also when ``weight`` is None.
    dbias : ndarray
        ``Σ dy`` over the ``axis`` dimensions; shape and dtype of ``dweight``.

    Raises
    ------
    TypeError
        If ``dy``, ``x``, ``mean`` or ``invstd`` is None; if an array
        argument has an unsupported dtype (not float16/32/64) or ``dy``'s
        dtype differs from ``x``'s; if ``axis`` is not an int or a tuple of
        ints; if the arrays are not all on one device; if ``out`` is not an
        array that can be written in place.
    ValueError
        If ``dy``'s shape differs from ``x``'s; if ``mean``, ``invstd`` or
        ``weight`` is not statistic-shaped; if ``out`` differs from ``x`` in
        shape or dtype, is read-only, has overlapping elements or shares
        memory with another argument (other than being exactly ``dy`` or
        ``x``); if ``x`` has no element; if ``axis`` names a dimension twice.
    numpy.exceptions.AxisError
        If an entry of ``axis`` is out of range for ``x.ndim``.

    See Also
    --------
    batch_norm_forward : The forward these are the gradients of.
    BatchNorm.backward : The same through a layer.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]], dtype=np.float32)
    >>> y, mean, invstd = nbnorm.batch_norm_forward(x, axis=0)
    >>> dy = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]], dtype=np.float32)
    >>> dx, dweight, dbias = nbnorm.batch_norm_backward(dy, x, mean, invstd, axis=0)
    >>> np.round(dx, 3)
    array([[ 0.306, -0.051],
           [-0.612,  0.102],
           [ 0.306, -0.051]], dtype=float32)
    >>> np.round(dweight, 3), dbias
    (array([1.225, 1.225], dtype=float32), array([3., 2.], dtype=float32))

    In training mode ``dx`` sums to zero over each statistic; with frozen
    statistics it is ``dy·weight·invstd``:

    >>> bool(np.allclose(dx.sum(axis=0), 0.0, atol=1e-6))
    True
    >>> weight = np.array([2.0, 1.0], dtype=np.float32)
    >>> dx, _, _ = nbnorm.batch_norm_backward(dy, x, mean, invstd, weight, axis=0,
    ...                                       training=False)
    >>> np.round(dx, 3)
    array([[1.225, 0.   ],
           [0.   , 0.306],
           [2.449, 0.306]], dtype=float32)
    """
    return _prepared_call("batch_norm_backward", (dy, x, mean, invstd, weight, out), 1,
                          (axis, training), _prepare_backward, axis, training)


def _prepare_backward(key, given, axis, training):
    dy, x, mean, invstd, weight, out = given
    if dy is None:
        raise TypeError("batch_norm_backward: dy is required, got None")
    backend, a, xa = _setup("batch_norm_backward", x, dy=dy, mean=mean, invstd=invstd,
                            weight=weight, out=out)
    V.float_input(xa, "x")
    dya = a["dy"]
    V.float_input(dya, "dy")
    V.shape_is(dya, "dy", xa.shape, "that of x")
    V.same_dtype(dya, "dy", xa.dtype, "x")
    ax = normalize_axis(axis, xa.ndim)
    sshape = stat_shape(xa.shape, ax)
    for name in ("mean", "invstd"):
        if a[name] is None:
            raise TypeError(f"batch_norm_backward: {name} is required, got None")
    for name in ("mean", "invstd", "weight"):
        V.stat_array(a[name], name, sshape, ax)
    V.out_array(a["out"], xa)
    _check_aliasing(a, [("out", "dy"), ("out", "x")])
    if prod(xa.shape) == 0:
        raise ValueError(f"x: zero-size input of shape {tuple(xa.shape)}")
    o, late = _native_out(a["out"])
    training = bool(training)
    launch = prepared_op(backend, "backward", dya, xa, a["mean"], a["invstd"], a["weight"], ax,
                         training, o, fallback=lambda dy, x, m, i, w, o: backend.backward(
                             dy, x, m, i, w, ax, training, o))
    check = _aliasing(_BACKWARD, [("out", "dy"), ("out", "x")])

    def call(x_given, out_given, arrays):
        check(arrays)
        dya, xa, m, inv, w, o = arrays
        o, late_out = _late(o, late)
        dx, dweight, dbias = launch(dya, xa, m, inv, w, o)
        dx = _deliver(dx, late_out)
        return (_result(backend, dx, x_given, out_given), backend.wrap(dweight, x_given),
                backend.wrap(dbias, x_given))
    return _remember(key, call, backend, given, tuple(a[k] for k in _BACKWARD), late)
