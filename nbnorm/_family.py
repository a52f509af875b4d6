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
from ._api import _check_aliasing, _deliver, _native_out, _result, _setup
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


def _forward(fname, x, geo_of, weight, bias, eps, out, rms, what, check=None, **extra):
    """Validate, then ``norm_forward``; ``check(a, xa, geo)`` validates the
    ``extra`` arguments before anything is computed."""
    backend, a, xa = _setup(fname, x, weight=weight, bias=bias, out=out, **extra)
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
    y, c, var, inv = _op(backend, fname, "norm_forward")(xa, geo, a["weight"], a["bias"], eps,
                                                         rms, o)
    return backend, a, xa, geo, _deliver(y, late), c, var, inv


def _backward(fname, dy, x, stats, geo_of, weight, rms, out, what):
    if dy is None:
        raise TypeError(f"{fname}: dy is required, got None")
    backend, a, xa = _setup(fname, x, dy=dy, weight=weight, out=out, **stats)
    V.float_input(xa, "x")
    dya = a["dy"]
    V.float_input(dya, "dy")
    V.shape_is(dya, "dy", xa.shape, "that of x")
    V.same_dtype(dya, "dy", xa.dtype, "x")
    geo = geo_of(xa.shape)
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
    centre = None if rms else a["mean"]
    inv = a["rstd"] if rms else a["invstd"]
    dx, dw, db = _op(backend, fname, "norm_backward")(dya, xa, centre, inv, geo, a["weight"],
                                                      rms, o)
    return backend, _deliver(dx, late), dw, db


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
    backend, _, _, _, y, mean, _, inv = _forward("layer_norm", x, _over_axes(axis), weight, bias,
                                              eps, out, False, _NORMALIZED)
    return _result(backend, y, x, out), backend.wrap(mean, x), backend.wrap(inv, x)


def layer_norm_backward(dy, x, mean, invstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`layer_norm`.  With ``g = dy·weight`` and
    ``x̂ = (x − mean)·invstd`` over the ``n`` normalized values of a statistic:

        dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n),  dweight = Σ dy·x̂,  dbias = Σ dy

    (``dweight``/``dbias`` summed over the other axes; returned even when
    ``weight`` is None).  Returns ``(dx, dweight, dbias)``.
    """
    backend, dx, dw, db = _backward("layer_norm_backward", dy, x,
                                    {"mean": mean, "invstd": invstd}, _over_axes(axis), weight,
                                    False, out, _NORMALIZED)
    return _result(backend, dx, x, out), backend.wrap(dw, x), backend.wrap(db, x)


# ------------------------------------------------------------------ group
def group_norm(x, num_groups, weight=None, bias=None, *, channel_axis=1, eps=1e-5, out=None):
    """Group normalization: statistics per (sample, group of C/G channels)
    over those channels and every other axis but 0; the affine per channel:

        y[n, c, …] = (x − mean[n, g(c)])·invstd[n, g(c)]·weight[c] + bias[c]

    ``C % num_groups ≠ 0`` raises ``ValueError``.  Returns ``(y, mean, invstd)``
    with ``mean``/``invstd`` of shape ``(N, num_groups)``.
    """
    backend, _, _, _, y, mean, _, inv = _forward("group_norm", x, _groups(channel_axis, num_groups),
                                              weight, bias, eps, out, False, _PER_CHANNEL)
    return _result(backend, y, x, out), backend.wrap(mean, x), backend.wrap(inv, x)


def group_norm_backward(dy, x, mean, invstd, num_groups, weight=None, *, channel_axis=1,
                        out=None):
    """Gradients of :func:`group_norm`: the per-channel affine inside a
    per-group statistic.  With ``g = dy·weight[c]``, ``x̂ = (x − mean)·invstd``
    and sums over the ``n = C/G·(spatial size)`` values of group ``(n, g)``:

        dx = invstd·(g − Σg/n − x̂·Σ(g·x̂)/n),
        dweight[c] = Σ_{n, spatial} dy·x̂,  dbias[c] = Σ_{n, spatial} dy.
    """
    backend, dx, dw, db = _backward("group_norm_backward", dy, x,
                                    {"mean": mean, "invstd": invstd},
                                    _groups(channel_axis, num_groups), weight, False, out,
                                    _PER_CHANNEL)
    return _result(backend, dx, x, out), backend.wrap(dw, x), backend.wrap(db, x)


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
    backend, a, xa, geo, y, mean, var, inv = _forward(
        "instance_norm", x, _instances(channel_axis), weight, bias, eps, out, False,
        _PER_CHANNEL, check=_check_running, running_mean=running_mean, running_var=running_var)
    if a["running_mean"] is not None:
        n = geo.n
        skipped = 0
        for name, stat, scale in (("running_mean", mean, 1.0), ("running_var", var, n / (n - 1))):
            batch, _ = backend.moments(stat, (0,), 0)       # the batch average, on x's device
            skipped += backend.update_running(a[name], batch, momentum, scale)
        if skipped:
            warnings.warn("instance_norm: non-finite instance statistics; running_mean/"
                          "running_var left unchanged where they occur", RuntimeWarning,
                          stacklevel=2)
    return _result(backend, y, x, out), backend.wrap(mean, x), backend.wrap(inv, x)


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
    backend, dx, dw, db = _backward("instance_norm_backward", dy, x,
                                    {"mean": mean, "invstd": invstd}, _instances(channel_axis),
                                    weight, False, out, _PER_CHANNEL)
    return _result(backend, dx, x, out), backend.wrap(dw, x), backend.wrap(db, x)


# -------------------------------------------------------------------- RMS
def rms_norm(x, weight=None, *, axis=-1, eps=None, out=None):
    """RMS normalization over ``axis``: ``rstd = 1/√(mean(x²) + eps)``,
    ``y = x·rstd·weight``; ``eps=None`` is ``np.finfo(x.dtype).eps`` (as
    PyTorch).  Returns ``(y, rstd)``."""
    backend, _, _, _, y, _, _, rstd = _forward("rms_norm", x, _over_axes(axis), weight, None, eps,
                                            out, True, _NORMALIZED)
    return _result(backend, y, x, out), backend.wrap(rstd, x)


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`rms_norm`.  With ``r = rstd``, ``g = weight·dy`` and
    sums over the ``N`` normalized values of a statistic:

        dx = r·g − (r³/N)·x·Σ(g·x),  dweight = Σ dy·x·r  (over the other axes).

    Returns ``(dx, dweight)``."""
    backend, dx, dw, _ = _backward("rms_norm_backward", dy, x, {"rstd": rstd}, _over_axes(axis),
                                   weight, True, out, _NORMALIZED)
    return _result(backend, dx, x, out), backend.wrap(dw, x)
