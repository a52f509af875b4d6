"""The peers of nbnorm's functions — what a user of NumPy, CuPy or PyTorch
writes instead — in one table, for ``python -m nbnorm`` (:mod:`._bench`,
:mod:`._bench_family`) and the asv suite in ``benchmarks/``.  Not public API.

``peer(impl, op)`` is a *binder*: called with the operation's arrays, in the
order of nbnorm's function of the same name, and its options (``axis=``
…), it returns a zero-argument function that runs the operation once.
What can be prepared once is prepared by the binder; the returned function
does what a user's call does, nothing more.  The implementations:

``numpy``, ``cupy``
    the same array-API code written for speed: ``x.mean``/``x.var`` in the
    statistics' precision (float32, or float64 for float64 data), the affine
    ``x·scale + shift`` by ufuncs with ``out=``; statistics in nbnorm's
    shapes (the kept dims), any ``axis``.  The asv suite's.
``numpy-plain``, ``cupy-plain``
    the textbook expressions, a new array at every step
    (``(x - mean) / sqrt(var + eps) * w + b``) in the default dtypes;
    statistics broadcastable against ``x`` (keepdims shapes); ``w`` and
    ``b`` may be None (no affine).  ``python -m nbnorm``'s "vs NumPy" (and
    "vs CuPy" on its GPU rows) and the sweep's NumPy ``moments``.
``torch``
    the ATen kernels behind ``torch.nn.BatchNorm*`` (``native_batch_norm``,
    ``F.batch_norm(training=False)``, ``native_batch_norm_backward``,
    ``torch.var_mean``) for any ``axis``: ``x`` (and ``dy``) copied to a
    (reduced, kept) 2-D tensor first unless the statistics' dim already is
    dim 1, as a user must, the results mapped back.  The asv suite's.
``torch-functional``
    PyTorch called as is on its own layouts — the statistics' dim is dim 1,
    the normalized dims are the last ones (checked by the binder):
    ``torch.var_mean``, ``torch.nn.functional``'s ``batch_norm`` (affine and
    running statistics optional), ``layer_norm``, ``rms_norm``,
    ``group_norm``, ``instance_norm``, and the ATen backward kernels that
    autograd runs for them, returning what PyTorch returns (``var_mean``:
    ``(var, mean)``).  :func:`autograd` times a backward through autograd
    itself.  ``python -m nbnorm``, the sweep
    (``benchmarks/sweep.py``) and ``benchmarks/bench_family.py``.

Operations and the binders' arguments (``eps`` is :data:`EPS` throughout,
but for ``rms_norm``, whose ``eps=None`` is PyTorch's default)::

    moments                 x, axis=
    batch_norm_forward      x, w, b, axis= [, running_mean=, running_var=]
    batch_norm_inference    x, mean, var, w, b, axis=
    batch_norm_backward     dy, x, mean, invstd, w, axis=
    layer_norm              x, w, b, axis=-1
    layer_norm_backward     dy, x, mean, invstd, w, b, axis=-1
    rms_norm                x, w, axis=-1, eps=None
    group_norm              x, groups, w, b
    group_norm_backward     dy, x, mean, invstd, groups, w
    instance_norm           x, w, b

``numpy``/``cupy``/``torch`` have the four batch-norm operations;
``numpy-plain``/``cupy-plain`` the same four; ``torch-functional`` all.
"""
from __future__ import annotations

import importlib

import numpy as np

EPS = 1e-5

# torch and cupy are imported by the first binder that needs them (``_load``):
# importing this module costs nothing.
torch = None
cupy = None


def _load(module):
    """Import ``torch`` or ``cupy`` into this module's namespace; returns it."""
    mod = importlib.import_module(module)
    globals()[module] = mod
    return mod


def stat_dtype(dtype):
    """The statistics' dtype for data of ``dtype``: float64 for float64, else float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


# ------------------------------------------------------------------ numpy / cupy
def _keep(a, x_ndim, axis):
    """Statistic-shaped ``a`` reshaped to broadcast against x (keepdims shape)."""
    shape, it = [], iter(a.shape)
    for d in range(x_ndim):
        shape.append(1 if d in axis else next(it))
    return a.reshape(shape)


def _xp_moments(xp, x, axis):
    sdt = stat_dtype(x.dtype)
    return x.mean(axis, dtype=sdt), x.var(axis, dtype=sdt)


def _xp_affine(xp, x, scale, shift):
    """y = x·scale + shift computed in the statistics' precision, stored in x's dtype."""
    y = xp.empty_like(x)
    xp.multiply(x, scale, out=y, casting="unsafe")
    xp.add(y, shift, out=y, casting="unsafe")
    return y


def _xp_forward(xp, x, w, b, axis):
    sdt = stat_dtype(x.dtype)
    mean = x.mean(axis, dtype=sdt, keepdims=True)
    var = x.var(axis, dtype=sdt, keepdims=True)
    invstd = 1 / xp.sqrt(var + sdt.type(EPS))
    scale = _keep(w, x.ndim, axis) * invstd
    y = _xp_affine(xp, x, scale, _keep(b, x.ndim, axis) - mean * scale)
    return y, mean, invstd


def _xp_inference(xp, x, mean, var, w, b, axis):
    sdt = stat_dtype(x.dtype)
    scale = _keep(w, x.ndim, axis) / xp.sqrt(_keep(var, x.ndim, axis) + sdt.type(EPS))
    return _xp_affine(xp, x, scale, _keep(b, x.ndim, axis) - _keep(mean, x.ndim, axis) * scale)


def _xp_backward(xp, dy, x, mean, invstd, w, axis):
    sdt = stat_dtype(x.dtype)
    n = x.size // mean.size
    mean, invstd = _keep(mean, x.ndim, axis), _keep(invstd, x.ndim, axis)
    xhat = xp.subtract(x, mean, dtype=sdt)
    xhat *= invstd
    dbias = dy.sum(axis, dtype=sdt, keepdims=True)
    dweight = xp.multiply(dy, xhat, dtype=sdt).sum(axis, keepdims=True)
    xhat *= dweight
    t = xp.multiply(dy, sdt.type(n), dtype=sdt)
    t -= dbias
    t -= xhat
    t *= _keep(w, x.ndim, axis) * invstd / sdt.type(n)
    return t.astype(x.dtype), dweight, dbias


# ------------------------------------------------------------------ numpy / cupy, plain
def _plain_moments(xp, x, axis):
    return x.mean(axis=axis), x.var(axis=axis)


def _plain_forward(xp, x, w, b, axis):
    m = x.mean(axis=axis, keepdims=True)
    v = x.var(axis=axis, keepdims=True)
    y = (x - m) / xp.sqrt(v + EPS)
    return y if w is None else y * w + b


def _plain_inference(xp, x, mean, var, w, b, axis):
    return (x - mean) / xp.sqrt(var + EPS) * w + b


def _plain_backward(xp, dy, x, mean, invstd, w, axis):
    n = x.size // mean.size
    xhat = (x - mean) * invstd
    sdy = dy.sum(axis=axis, keepdims=True)
    sdyx = (dy * xhat).sum(axis=axis, keepdims=True)
    return w * invstd / n * (n * dy - sdy - xhat * sdyx)


def _xp_binder(module, fn):
    """The binder of ``fn(xp, *arrays, axis)`` for ``module`` (numpy or cupy)."""
    def bind(*arrays, axis):
        xp = np if module == "numpy" else _load(module)
        return lambda: fn(xp, *arrays, axis)
    return bind


# ------------------------------------------------------------------ torch, any axis
def _torch_2d(t, axis):
    """``t`` as torch's (N, C, ...) with the kept dims as dim 1: itself when it
    already is, else a (reduced, kept) 2-D copy (what a user would do), with
    the information to map results back."""
    kept = [d for d in range(t.dim()) if d not in axis]
    if kept == [1]:
        return t, None
    perm = list(axis) + kept
    tp = t.permute(perm)
    n_red = int(np.prod([t.shape[d] for d in axis]))
    return tp.reshape(n_red, -1), (tp.shape, perm)


def _torch_back(t, info):
    if info is None:
        return t
    shape, perm = info
    return t.reshape(shape).permute(tuple(int(i) for i in np.argsort(perm)))


def _torch_moments(x, axis):
    var, mean = torch.var_mean(x, dim=axis, correction=0)
    return mean, var


def _torch_forward(x, w, b, axis):
    x2, info = _torch_2d(x, axis)
    y, mean, invstd = torch.ops.aten.native_batch_norm(
        x2, w.reshape(-1), b.reshape(-1), None, None, True, 0.1, EPS)
    return _torch_back(y, info), mean, invstd


def _torch_inference(x, mean, var, w, b, axis):
    x2, info = _torch_2d(x, axis)
    y = torch.nn.functional.batch_norm(x2, mean.reshape(-1), var.reshape(-1), w.reshape(-1),
                                       b.reshape(-1), training=False, eps=EPS)
    return _torch_back(y, info)


def _torch_backward(dy, x, mean, invstd, w, axis):
    x2, info = _torch_2d(x, axis)
    dy2, _ = _torch_2d(dy, axis)
    dx, dw, db = torch.ops.aten.native_batch_norm_backward(
        dy2, x2, w.reshape(-1), None, None, mean.reshape(-1), invstd.reshape(-1), True, EPS,
        [True, True, True])
    return _torch_back(dx, info), dw, db


def _torch_binder(fn):
    def bind(*arrays, axis):
        _load("torch")
        return lambda: fn(*arrays, axis)
    return bind


# ------------------------------------------------------------------ torch, as called
def _channels_at_1(x, axis):
    """Check that ``axis`` leaves dim 1 alone (torch's batch-norm layout)."""
    if tuple(axis) != (0,) + tuple(range(2, x.dim())):
        raise ValueError(f"torch-functional: axis {axis} of a {x.dim()}-D tensor: the "
                         f"statistics must be along dim 1 (use impl 'torch')")


def _trailing(x, axis):
    """Torch's ``normalized_shape`` for ``axis`` (the last dims of ``x``)."""
    dims = sorted(d % x.dim() for d in ((axis,) if isinstance(axis, int) else axis))
    if dims != list(range(x.dim() - len(dims), x.dim())):
        raise ValueError(f"torch-functional: axis {axis} of a {x.dim()}-D tensor: the "
                         f"normalized dims must be the last ones")
    return list(x.shape[dims[0]:])


def _f_moments(x, axis):
    t = _load("torch")
    return lambda: t.var_mean(x, dim=axis, correction=0)


def _f_forward(x, w, b, axis, running_mean=None, running_var=None):
    F = _load("torch").nn.functional
    _channels_at_1(x, axis)
    return lambda: F.batch_norm(x, running_mean, running_var, w, b, training=True, eps=EPS)


def _f_inference(x, mean, var, w, b, axis):
    F = _load("torch").nn.functional
    _channels_at_1(x, axis)
    return lambda: F.batch_norm(x, mean, var, w, b, training=False, eps=EPS)


def _f_backward(dy, x, mean, invstd, w, axis):
    t = _load("torch")
    _channels_at_1(x, axis)
    return lambda: t.ops.aten.native_batch_norm_backward(dy, x, w, None, None, mean, invstd,
                                                         True, EPS, [True, True, True])


def _f_layer_norm(x, w, b, axis=-1):
    F = _load("torch").nn.functional
    shape = _trailing(x, axis)
    return lambda: F.layer_norm(x, shape, w, b, EPS)


def _f_layer_norm_backward(dy, x, mean, invstd, w, b, axis=-1):
    t = _load("torch")
    shape = _trailing(x, axis)
    return lambda: t.ops.aten.native_layer_norm_backward(dy, x, shape, mean, invstd, w, b,
                                                         [True, True, True])


def _f_rms_norm(x, w, axis=-1, eps=None):
    F = _load("torch").nn.functional
    shape = _trailing(x, axis)
    return lambda: F.rms_norm(x, shape, w, eps)


def _f_group_norm(x, groups, w, b):
    F = _load("torch").nn.functional
    return lambda: F.group_norm(x, groups, w, b, EPS)


def _f_group_norm_backward(dy, x, mean, invstd, groups, w):
    t = _load("torch")
    n, c = x.shape[:2]
    hw = x.numel() // (n * c)
    return lambda: t.ops.aten.native_group_norm_backward(dy, x, mean, invstd, w, n, c, hw,
                                                         groups, [True, True, True])


def _f_instance_norm(x, w, b):
    F = _load("torch").nn.functional
    return lambda: F.instance_norm(x, weight=w, bias=b, eps=EPS)


def autograd(y, inputs, dy):
    """The backward through PyTorch's autograd of a forward graph built once
    (``y`` from tensors ``inputs`` that require grad): a zero-argument function
    returning ``torch.autograd.grad(y, inputs, dy, retain_graph=True)``."""
    t = _load("torch")
    return lambda: t.autograd.grad(y, inputs, dy, retain_graph=True)


# ------------------------------------------------------------------ the table
BATCH_NORM = ("moments", "batch_norm_forward", "batch_norm_inference", "batch_norm_backward")

PEERS = {}
for _module in ("numpy", "cupy"):
    for _op, _fast, _plain in zip(BATCH_NORM,
                                  (_xp_moments, _xp_forward, _xp_inference, _xp_backward),
                                  (_plain_moments, _plain_forward, _plain_inference,
                                   _plain_backward)):
        PEERS[_module, _op] = _xp_binder(_module, _fast)
        PEERS[f"{_module}-plain", _op] = _xp_binder(_module, _plain)
for _op, _fn in zip(BATCH_NORM, (_torch_moments, _torch_forward, _torch_inference,
                                 _torch_backward)):
    PEERS["torch", _op] = _torch_binder(_fn)
PEERS.update({("torch-functional", op): bind for op, bind in (
    ("moments", _f_moments), ("batch_norm_forward", _f_forward),
    ("batch_norm_inference", _f_inference), ("batch_norm_backward", _f_backward),
    ("layer_norm", _f_layer_norm), ("layer_norm_backward", _f_layer_norm_backward),
    ("rms_norm", _f_rms_norm), ("group_norm", _f_group_norm),
    ("group_norm_backward", _f_group_norm_backward), ("instance_norm", _f_instance_norm))})
del _module, _op, _fast, _plain, _fn


def peer(impl, op):
    """The binder of ``impl``'s ``op`` (see the module's docstring)."""
    try:
        return PEERS[impl, op]
    except KeyError:
        raise KeyError(f"no peer {impl!r} of {op!r}; the table has "
                       f"{sorted(PEERS)}") from None
