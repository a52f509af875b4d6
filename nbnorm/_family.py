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
    x, out)``; ``check(a, xa, geo)`` validates the other arguments before
    anything is computed."""
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

    def call(x_given, out_given, arrays):
        check_aliasing(arrays)
        named = dict(zip(names, arrays))
        o, late_out = _late(named["out"], late)
        y, c, var, inv = launch(named["x"], named.get("weight"), named.get("bias"), o)
        return finish(backend, named, geo, _deliver(y, late_out), c, var, inv, x_given,
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


def _y_mean_invstd(backend, named, geo, y, c, var, inv, x, out):
    return _result(backend, y, x, out), backend.wrap(c, x), backend.wrap(inv, x)


def _y_rstd(backend, named, geo, y, c, var, inv, x, out):
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
    """
    return _run("layer_norm", _FORWARD, (x, weight, bias, out), (axis, eps), _forward,
                _over_axes(axis), eps, False, _NORMALIZED, _y_mean_invstd)


def layer_norm_backward(dy, x, mean, invstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`layer_norm`.  With ``g = dy·weight`` and
    ``x̂ = (x − mean)·invstd`` over the ``n`` normalized values of a statistic:

        dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n),  dweight = Σ dy·x̂,  dbias = Σ dy

    (``dweight``/``dbias`` summed over the other axes; returned even when
    ``weight`` is None).  Returns ``(dx, dweight, dbias)``.
    """
    return _run("layer_norm_backward", _BACKWARD, (dy, x, mean, invstd, weight, out), (axis,),
                _backward, _over_axes(axis), False, _NORMALIZED, _dx_dweight_dbias)


# ------------------------------------------------------------------ group
def group_norm(x, num_groups, weight=None, bias=None, *, channel_axis=1, eps=1e-5, out=None):
    """Group normalization: statistics per (sample, group of C/G channels)
    over those channels and every other axis but 0; the affine per channel:

        y[n, c, …] = (x − mean[n, g(c)])·invstd[n, g(c)]·weight[c] + bias[c]

    ``C % num_groups ≠ 0`` raises ``ValueError``.  Returns ``(y, mean, invstd)``
    with ``mean``/``invstd`` of shape ``(N, num_groups)``.
    """
    return _run("group_norm", _FORWARD, (x, weight, bias, out), (num_groups, channel_axis, eps),
                _forward, _groups(channel_axis, num_groups), eps, False, _PER_CHANNEL,
                _y_mean_invstd)


def group_norm_backward(dy, x, mean, invstd, num_groups, weight=None, *, channel_axis=1,
                        out=None):
    """Gradients of :func:`group_norm`: the per-channel affine inside a
    per-group statistic.  With ``g = dy·weight[c]``, ``x̂ = (x − mean)·invstd``
    and sums over the ``n = C/G·(spatial size)`` values of group ``(n, g)``:

        dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n),
        dweight[c] = Σ_{n, spatial} dy·x̂,  dbias[c] = Σ_{n, spatial} dy.
    """
    return _run("group_norm_backward", _BACKWARD, (dy, x, mean, invstd, weight, out),
                (num_groups, channel_axis), _backward, _groups(channel_axis, num_groups), False,
                _PER_CHANNEL, _dx_dweight_dbias)


# --------------------------------------------------------------- instance
def instance_norm(x, weight=None, bias=None, *, channel_axis=1, eps=1e-5, running_mean=None,
                  running_var=None, momentum=0.1, out=None):
    """Instance normalization: group norm with one channel per group;
    ``mean``/``invstd`` of shape ``(N, C)``.

    ``running_mean``/``running_var`` (shape ``(C,)``), when given, are updated
    in place as ``torch.nn.functional.instance_norm`` does: with the batch
    average of the per-instance means and *unbiased* variances,
    ``r ← (1 − momentum)·r + momentum·avg``; instances whose statistics are
    not finite leave the channel unchanged with a ``RuntimeWarning``.
    """
    momentum = V.momentum_value(momentum)
    return _run("instance_norm", _RUNNING, (x, weight, bias, running_mean, running_var, out),
                (channel_axis, eps, momentum), _forward, _instances(channel_axis), eps, False,
                _PER_CHANNEL, lambda *r: _instance_finish(momentum, *r), _check_running)


def _instance_finish(momentum, backend, named, geo, y, mean, var, inv, x, out):
    """Results of :func:`instance_norm`, the running statistics updated."""
    if named["running_mean"] is not None:
        n = geo.n
        skipped = 0
        for name, stat, scale in (("running_mean", mean, 1.0), ("running_var", var, n / (n - 1))):
            batch, _ = backend.moments(stat, (0,), 0)       # the batch average, on x's device
            skipped += backend.update_running(named[name], batch, momentum, scale)
        if skipped:
            warnings.warn("instance_norm: non-finite instance statistics; running_mean/"
                          "running_var left unchanged where they occur", RuntimeWarning,
                          stacklevel=5)
    return _y_mean_invstd(backend, named, geo, y, mean, var, inv, x, out)


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
    one channel per group)."""
    return _run("instance_norm_backward", _BACKWARD, (dy, x, mean, invstd, weight, out),
                (channel_axis,), _backward, _instances(channel_axis), False, _PER_CHANNEL,
                _dx_dweight_dbias)


# -------------------------------------------------------------------- RMS
def rms_norm(x, weight=None, *, axis=-1, eps=None, out=None):
    """RMS normalization over ``axis``: ``rstd = 1/√(mean(x²) + eps)``,
    ``y = x·rstd·weight``; ``eps=None`` is ``np.finfo(x.dtype).eps`` (as
    PyTorch).  Returns ``(y, rstd)``."""
    return _run("rms_norm", _RMS, (x, weight, out), (axis, eps), _forward, _over_axes(axis), eps,
                True, _NORMALIZED, _y_rstd)


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`rms_norm`.  With ``r = rstd``, ``g = weight·dy`` and
    sums over the ``N`` normalized values of a statistic:

        dx = r·g − (r³/N)·x·Σ(g·x),  dweight = Σ dy·x·r  (over the other axes).

    Returns ``(dx, dweight)``."""
    return _run("rms_norm_backward", _RMS_BACKWARD, (dy, x, rstd, weight, out), (axis,),
                _backward, _over_axes(axis), True, _NORMALIZED, _dx_dweight)
