"""Normalization layers with PyTorch's semantics on nbnorm's functions.

=============  ==========================  =====================  =================
layer          statistics (training)       eval                   PyTorch
=============  ==========================  =====================  =================
BatchNorm      every axis but the channel  running statistics     BatchNorm1d/2d/3d
InstanceNorm   per (sample, channel)       running, if tracked    InstanceNorm1d/2d/3d
GroupNorm      per (sample, group)         as training            GroupNorm
LayerNorm      the trailing dims           as training            LayerNorm
RMSNorm        the trailing dims (x²)      as training            RMSNorm
=============  ==========================  =====================  =================

Running statistics (``track_running_stats``) follow PyTorch: in training,
``r ← (1 − momentum)·r + momentum·batch`` with the unbiased batch variance;
``momentum=None`` is the cumulative average (factor ``1/num_batches_tracked``).
Flax/Keras write momentum the other way round (their 0.99 is PyTorch's
0.01) and default ``eps`` to 1e-3 rather than 1e-5 — pass both explicitly
when porting weights.
"""
from __future__ import annotations

import operator

import numpy as np

from . import _validate as V
from ._api import batch_norm_backward, batch_norm_forward, batch_norm_inference
from ._family import (group_norm, group_norm_backward, instance_norm, instance_norm_backward,
                      layer_norm, layer_norm_backward, rms_norm, rms_norm_backward)
from ._geometry import channel_axis_of
from ._layer_base import NormLayer, _host, positive_int

__all__ = ["BatchNorm", "InstanceNorm", "GroupNorm", "LayerNorm", "RMSNorm"]


def _channel_axis(x, channel_axis, channels, name):
    """The axes a per-channel layer reduces over: every axis but the channel
    axis (the geometry's rule, :func:`nbnorm._geometry.channel_axis_of`),
    which must hold the layer's ``channels``."""
    try:
        c = channel_axis_of(x.shape, channel_axis)
    except (TypeError, ValueError) as e:     # AxisError is a ValueError
        raise type(e)(f"{name}: {e}") from None
    if x.shape[c] != channels:
        raise ValueError(f"{name}: x: expected {channels} channels on axis {channel_axis}, got "
                         f"shape {tuple(x.shape)}")
    return tuple(d for d in range(len(x.shape)) if d != c)


def _momentum(momentum):
    return None if momentum is None else V.momentum_value(momentum)


class _Channels(NormLayer):
    """Per-channel parameters and running statistics (BatchNorm, InstanceNorm)."""

    _arrays = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, num_features, channel_axis, eps, momentum, affine, track_running_stats,
                 dtype):
        super().__init__(eps, dtype)
        self.num_features = positive_int(num_features, "num_features")
        self.channel_axis = operator.index(channel_axis)
        self.momentum = _momentum(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c, dt = self.num_features, self.dtype
        self.weight = np.ones(c, dt) if affine else None
        self.bias = np.zeros(c, dt) if affine else None
        self.running_mean = np.zeros(c, dt) if track_running_stats else None
        self.running_var = np.ones(c, dt) if track_running_stats else None

    def reset_running_stats(self):
        """Running mean 0, running variance 1 and ``num_batches_tracked`` 0,
        as a new layer has them; nothing when the layer does not track
        running statistics.

        Examples
        --------
        >>> layer = nbnorm.BatchNorm(2)
        >>> _ = layer(np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32))
        >>> layer.num_batches_tracked
        1
        >>> layer.reset_running_stats()
        >>> layer.running_mean, layer.running_var, layer.num_batches_tracked
        (array([0., 0.], dtype=float32), array([1., 1.], dtype=float32), 0)
        """
        if self.track_running_stats:
            self.running_mean = self._place(np.zeros(self.num_features, self.dtype))
            self.running_var = self._place(np.ones(self.num_features, self.dtype))
            self.num_batches_tracked = 0

    def _axis(self, x):
        return _channel_axis(x, self.channel_axis, self.num_features, type(self).__name__)

    def _running_forward(self, x, axis):
        """Eval/frozen with running statistics: ``(y, saved)`` for a
        ``training=False`` backward (``invstd`` of the running variance)."""
        y = batch_norm_inference(x, self.running_mean, self.running_var, self.weight, self.bias,
                                 axis=axis, eps=self.eps)
        return y, (x, axis, "running")

    def _running_backward(self, dy, x, axis):
        rv = _host(self.running_var, "running_var").astype(np.float64)
        invstd = self._place(1.0 / np.sqrt(rv + self.eps))
        return batch_norm_backward(dy, x, self.running_mean, invstd, self.weight, axis=axis,
                                   training=False)

    def _forward(self, x):
        """Running statistics in eval/frozen mode where tracked; else the
        batch's (instance's) statistics, updating the running ones in training."""
        axis = self._axis(x)
        if not self.training and self.track_running_stats:
            return self._running_forward(x, axis)
        running = {}
        if self.training and self.track_running_stats:
            running = {"running_mean": self.running_mean, "running_var": self.running_var,
                       "momentum": self._momentum_now()}
        y, mean, invstd = self._batch_forward(x, axis, running)
        return y, (x, axis, "batch", mean, invstd)

    def _backward(self, dy, saved):
        x, axis, kind = saved[:3]
        if kind == "running":
            return self._running_backward(dy, x, axis)
        return self._batch_backward(dy, x, axis, saved[3], saved[4])

    def _describe(self):
        return (f"{self.num_features}, channel_axis={self.channel_axis}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm(_Channels):
    """Batch normalization over every axis but ``channel_axis`` (PyTorch's
    BatchNorm1d/2d/3d for any rank ≥ 2; channels-last with ``channel_axis=-1``).

    Training: ``y = (x − mean)·invstd·weight + bias`` with batch statistics,
    running statistics updated; eval: the running statistics (batch
    statistics when ``track_running_stats=False``); frozen: the running
    statistics in forward and backward.

    The running statistics follow PyTorch: ``r ← (1 − momentum)·r +
    momentum·batch`` with the unbiased batch variance, and ``momentum=None``
    is the cumulative average (factor ``1/num_batches_tracked``).  Flax and
    Keras write momentum the other way round (their 0.99 is PyTorch's 0.01)
    and default ``eps`` to 1e-3: pass both explicitly when porting weights.

    Parameters
    ----------
    num_features : int
        The number of channels C, a positive int.
    channel_axis : int, optional
        The channel axis of the inputs: 1 (the default) for ``(N, C, …)``,
        -1 for channels-last; never 0, the batch axis.
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    momentum : float or None, optional
        The weight of the batch statistic in the running update, in
        ``[0, 1]`` (default 0.1); None for the cumulative average.
    affine : bool, optional
        If True (the default), the layer has a learnable ``weight`` (ones)
        and ``bias`` (zeros) of shape ``(C,)``.
    track_running_stats : bool, optional
        If True (the default), the layer keeps ``running_mean`` (zeros) and
        ``running_var`` (ones) and uses them in eval mode.
    dtype : dtype, optional
        The dtype of the parameters and running statistics: float16,
        float32 (the default) or float64.

    Attributes
    ----------
    weight, bias : ndarray or None
        The affine parameters, shape ``(C,)``; None when not ``affine``.
    running_mean, running_var : ndarray or None
        The running statistics, shape ``(C,)``; None when not tracked.
    num_batches_tracked : int
        Training calls that updated the running statistics.
    weight_grad, bias_grad : ndarray or None
        The parameter gradients of the last :meth:`backward`.
    device : str
        ``"cpu"`` or ``"cuda"`` (see :meth:`to`).

    Raises
    ------
    TypeError
        If ``num_features`` or ``channel_axis`` is not an int, ``eps`` or
        ``momentum`` not a real number, or ``dtype`` not float16, float32 or
        float64.
    ValueError
        If ``num_features`` is not positive, ``eps`` is negative or not
        finite, or ``momentum`` is outside ``[0, 1]``.

    See Also
    --------
    batch_norm_forward : The training-mode forward.
    batch_norm_inference : The forward with running statistics.
    batch_norm_backward : The gradients.
    fold_batch_norm : Fold the eval-mode map into the layer before.

    Examples
    --------
    >>> layer = nbnorm.BatchNorm(3)
    >>> layer
    BatchNorm(3, channel_axis=1, eps=1e-05, momentum=0.1, ..., mode='train', device='cpu')
    >>> x = np.random.default_rng(0).normal(2.0, 3.0, size=(8, 3, 5)).astype(np.float32)
    >>> y = layer(x)
    >>> y.shape, y.dtype
    ((8, 3, 5), dtype('float32'))
    >>> bool(np.allclose(y.mean(axis=(0, 2)), 0.0, atol=1e-5))
    True
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.bias_grad
    array([40., 40., 40.], dtype=float32)

    Channels-last input, and eval mode with the running statistics:

    >>> layer = nbnorm.BatchNorm(3, channel_axis=-1)
    >>> y = layer(np.moveaxis(x, 1, -1))
    >>> layer.eval().mode
    'eval'
    >>> layer(np.moveaxis(x, 1, -1)).shape
    (8, 5, 3)
    """

    def __init__(self, num_features, *, channel_axis=1, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__(num_features, channel_axis, eps, momentum, affine, track_running_stats,
                         dtype)

    def _momentum_now(self):
        self.num_batches_tracked += 1
        return 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum

    def _batch_forward(self, x, axis, running):
        return batch_norm_forward(x, self.weight, self.bias, axis=axis, eps=self.eps, **running)

    def _batch_backward(self, dy, x, axis, mean, invstd):
        return batch_norm_backward(dy, x, mean, invstd, self.weight, axis=axis)

    def fold_into(self, weight, bias=None, out_axis=0):
        """The preceding layer's ``(weight, bias)`` with this layer's eval-mode
        map folded in (see :func:`nbnorm.fold_batch_norm`).

        With this layer's running statistics, ``eps`` and (when affine)
        ``weight``/``bias`` as ``running_mean``, ``running_var``, ``eps``,
        ``gamma`` and ``beta``: the returned weight and bias compute what the
        two layers compute in eval mode.

        Parameters
        ----------
        weight : array_like
            The preceding layer's float weight, its output channels (this
            layer's ``num_features``) on ``out_axis``.
        bias : array_like, optional
            The preceding layer's bias, shape ``(C_out,)``.  None (the
            default) is 0.
        out_axis : int, optional
            The output-channel axis of ``weight``: 0 (the default) for
            convolution and linear weights, 1 for transposed convolutions.

        Returns
        -------
        weight : ndarray
            The folded weight, ``weight``'s shape and dtype.
        bias : ndarray
            The folded bias, shape ``(C_out,)``, ``weight``'s dtype.

        Raises
        ------
        ValueError
            If the layer has no running statistics
            (``track_running_stats=False``), and as :func:`fold_batch_norm`.
        TypeError
            As :func:`fold_batch_norm`.
        OverflowError
            As :func:`fold_batch_norm`: a folded value past the dtype's range.
        numpy.exceptions.AxisError
            If ``out_axis`` is out of range for ``weight.ndim``.

        See Also
        --------
        fold_batch_norm : The same from the arrays.

        Examples
        --------
        A linear layer ``x @ W.T + b`` followed by a batch norm in eval mode:

        >>> layer = nbnorm.BatchNorm(2).load_state_dict(
        ...     {"running_mean": [1.0, -1.0], "running_var": [4.0, 0.25]}, strict=False).eval()
        >>> W = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]], dtype=np.float32)
        >>> b = np.array([0.0, 1.0], dtype=np.float32)
        >>> W2, b2 = layer.fold_into(W, b)
        >>> np.round(W2, 3), np.round(b2, 3)
        (array([[ 0.5,  1. ,  0. ],
               [ 1. , -2. ,  2. ]], dtype=float32), array([-0.5,  4. ], dtype=float32))
        >>> x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
        >>> bool(np.allclose(layer(x @ W.T + b), x @ W2.T + b2))
        True
        """
        from ._fold import fold_batch_norm
        if not self.track_running_stats:
            raise ValueError("fold_into: the layer has no running statistics "
                             "(track_running_stats=False)")
        st = self.state_dict()
        return fold_batch_norm(weight, bias, st["running_mean"], st["running_var"],
                               st.get("weight"), st.get("bias"), eps=self.eps, out_axis=out_axis)


class InstanceNorm(_Channels):
    """Instance normalization: statistics per (sample, channel) over the
    remaining axes (PyTorch's InstanceNorm1d/2d/3d: ``affine=False`` and
    ``track_running_stats=False`` by default; with tracking, eval uses the
    running statistics and training updates them).

    Training: ``y = (x − mean)·invstd·weight + bias`` with the statistics of
    each instance (see :func:`instance_norm`); the running statistics, when
    tracked, are updated with the batch average of the instance means and
    unbiased variances, ``r ← (1 − momentum)·r + momentum·avg``.

    Parameters
    ----------
    num_features : int
        The number of channels C, a positive int.
    channel_axis : int, optional
        The channel axis of the inputs: 1 (the default) for ``(N, C, …)``,
        -1 for channels-last; never 0, the batch axis.
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    momentum : float or None, optional
        The weight of the batch average in the running update, in
        ``[0, 1]`` (default 0.1); None is 0, as in PyTorch's InstanceNorm
        (the running statistics stay as they are).
    affine : bool, optional
        If True, the layer has a learnable ``weight`` (ones) and ``bias``
        (zeros) of shape ``(C,)`` (default False).
    track_running_stats : bool, optional
        If True, the layer keeps ``running_mean`` (zeros) and
        ``running_var`` (ones) and uses them in eval mode (default False).
    dtype : dtype, optional
        The dtype of the parameters and running statistics: float16,
        float32 (the default) or float64.

    Attributes
    ----------
    weight, bias : ndarray or None
        The affine parameters, shape ``(C,)``; None when not ``affine``.
    running_mean, running_var : ndarray or None
        The running statistics, shape ``(C,)``; None when not tracked.
    weight_grad, bias_grad : ndarray or None
        The parameter gradients of the last :meth:`backward`.
    device : str
        ``"cpu"`` or ``"cuda"`` (see :meth:`to`).

    Raises
    ------
    TypeError
        If ``num_features`` or ``channel_axis`` is not an int, ``eps`` or
        ``momentum`` not a real number, or ``dtype`` not float16, float32 or
        float64.
    ValueError
        If ``num_features`` is not positive, ``eps`` is negative or not
        finite, or ``momentum`` is outside ``[0, 1]``.

    See Also
    --------
    instance_norm : The forward.
    instance_norm_backward : The gradients.
    GroupNorm : Several channels per group.

    Examples
    --------
    >>> layer = nbnorm.InstanceNorm(3)
    >>> x = np.random.default_rng(0).normal(2.0, 3.0, size=(8, 3, 5)).astype(np.float32)
    >>> y = layer(x)
    >>> y.shape
    (8, 3, 5)
    >>> bool(np.allclose(y.mean(axis=2), 0.0, atol=1e-5))
    True
    >>> layer.state_dict()
    {}

    With tracking, the running statistics are used in eval mode:

    >>> layer = nbnorm.InstanceNorm(3, affine=True, track_running_stats=True)
    >>> y = layer(x)
    >>> list(layer.state_dict())
    ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    >>> layer.eval()(x).shape
    (8, 3, 5)
    """

    def __init__(self, num_features, *, channel_axis=1, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, dtype=np.float32):
        super().__init__(num_features, channel_axis, eps, momentum, affine, track_running_stats,
                         dtype)

    def _momentum_now(self):
        return 0.0 if self.momentum is None else self.momentum     # as PyTorch's InstanceNorm

    def _batch_forward(self, x, axis, running):
        return instance_norm(x, self.weight, self.bias, channel_axis=self.channel_axis,
                             eps=self.eps, **running)

    def _batch_backward(self, dy, x, axis, mean, invstd):
        return instance_norm_backward(dy, x, mean, invstd, self.weight,
                                      channel_axis=self.channel_axis)


class GroupNorm(NormLayer):
    """Group normalization (PyTorch's GroupNorm): statistics per (sample,
    group of C/G channels); the same in every mode.

    ``y = (x − mean)·invstd·weight + bias`` with the statistics of each
    (sample, group) and the affine per channel (see :func:`group_norm`).

    Parameters
    ----------
    num_groups : int
        The number of groups G, a positive divisor of ``num_channels``.
    num_channels : int
        The number of channels C, a positive int.
    channel_axis : int, optional
        The channel axis of the inputs: 1 (the default) for ``(N, C, …)``,
        -1 for channels-last; never 0, the batch axis.
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    affine : bool, optional
        If True (the default), the layer has a learnable ``weight`` (ones)
        and ``bias`` (zeros) of shape ``(C,)``.
    dtype : dtype, optional
        The dtype of the parameters: float16, float32 (the default) or
        float64.

    Attributes
    ----------
    weight, bias : ndarray or None
        The affine parameters, shape ``(C,)``; None when not ``affine``.
    weight_grad, bias_grad : ndarray or None
        The parameter gradients of the last :meth:`backward`.
    device : str
        ``"cpu"`` or ``"cuda"`` (see :meth:`to`).

    Raises
    ------
    TypeError
        If ``num_groups``, ``num_channels`` or ``channel_axis`` is not an
        int, ``eps`` not a real number, or ``dtype`` not float16, float32 or
        float64.
    ValueError
        If ``num_groups`` or ``num_channels`` is not positive, or
        ``num_groups`` does not divide ``num_channels``, or ``eps`` is
        negative or not finite.

    See Also
    --------
    group_norm : The forward.
    group_norm_backward : The gradients.

    Examples
    --------
    >>> layer = nbnorm.GroupNorm(2, 4)
    >>> x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    >>> np.round(layer(x)[0], 3)
    array([[-1.464, -0.878, -0.293],
           [ 0.293,  0.878,  1.464],
           [-1.464, -0.878, -0.293],
           [ 0.293,  0.878,  1.464]], dtype=float32)
    >>> list(layer.state_dict())
    ['weight', 'bias']
    """

    _arrays = ("weight", "bias")

    def __init__(self, num_groups, num_channels, *, channel_axis=1, eps=1e-5, affine=True,
                 dtype=np.float32):
        super().__init__(eps, dtype)
        self.num_groups = positive_int(num_groups, "num_groups")
        self.num_channels = positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_groups: {self.num_channels} channels are not divisible into "
                             f"{self.num_groups} groups")
        self.channel_axis = operator.index(channel_axis)
        self.affine = bool(affine)
        self.weight = np.ones(num_channels, self.dtype) if affine else None
        self.bias = np.zeros(num_channels, self.dtype) if affine else None

    def _forward(self, x):
        _channel_axis(x, self.channel_axis, self.num_channels, "GroupNorm")
        y, mean, invstd = group_norm(x, self.num_groups, self.weight, self.bias,
                                     channel_axis=self.channel_axis, eps=self.eps)
        return y, (x, mean, invstd)

    def _backward(self, dy, saved):
        x, mean, invstd = saved
        return group_norm_backward(dy, x, mean, invstd, self.num_groups, self.weight,
                                   channel_axis=self.channel_axis)

    def _describe(self):
        return (f"{self.num_groups}, {self.num_channels}, channel_axis={self.channel_axis}, "
                f"eps={self.eps}, affine={self.affine}")


class _Trailing(NormLayer):
    """Statistics over the trailing ``normalized_shape`` dims."""

    _arrays = ("weight", "bias")

    def __init__(self, normalized_shape, eps, elementwise_affine, bias, dtype):
        super().__init__(eps, dtype)
        shape = ((normalized_shape,) if np.ndim(normalized_shape) == 0
                 else tuple(normalized_shape))
        self.normalized_shape = tuple(positive_int(s, "normalized_shape") for s in shape)
        if not self.normalized_shape:
            raise ValueError("normalized_shape: expected at least one dimension")
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = np.ones(self.normalized_shape, self.dtype) if elementwise_affine else None
        self.bias = (np.zeros(self.normalized_shape, self.dtype)
                     if elementwise_affine and bias else None)

    def _axis(self, x):
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape or len(x.shape) < k:
            raise ValueError(f"{type(self).__name__}: x: expected trailing dims "
                             f"{self.normalized_shape}, got shape {tuple(x.shape)}")
        return tuple(range(-k, 0))

    def _describe(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class LayerNorm(_Trailing):
    """Layer normalization over the trailing ``normalized_shape`` dims (PyTorch's LayerNorm).

    ``y = (x − mean)·invstd·weight + bias`` with the statistics of each
    index of the leading dims (see :func:`layer_norm`); the same in every
    mode.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing dims normalized over (positive ints, at least one);
        ``weight`` and ``bias`` have this shape.
    eps : float, optional
        Added to the variance before the square root; finite and ≥ 0
        (default 1e-5).
    elementwise_affine : bool, optional
        If True (the default), the layer has a learnable ``weight`` (ones).
    bias : bool, optional
        If True (the default) and ``elementwise_affine``, the layer also has
        a learnable ``bias`` (zeros).
    dtype : dtype, optional
        The dtype of the parameters: float16, float32 (the default) or
        float64.

    Attributes
    ----------
    weight, bias : ndarray or None
        The affine parameters, of shape ``normalized_shape``; None when absent.
    weight_grad, bias_grad : ndarray or None
        The parameter gradients of the last :meth:`backward`.
    device : str
        ``"cpu"`` or ``"cuda"`` (see :meth:`to`).

    Raises
    ------
    TypeError
        If an entry of ``normalized_shape`` is not an int, ``eps`` not a real
        number, or ``dtype`` not float16, float32 or float64.
    ValueError
        If ``normalized_shape`` is empty or has an entry < 1, or ``eps`` is
        negative or not finite.

    See Also
    --------
    layer_norm : The forward.
    layer_norm_backward : The gradients.
    RMSNorm : Normalization by the root mean square.

    Examples
    --------
    >>> layer = nbnorm.LayerNorm(4)
    >>> x = np.array([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 4.0, 4.0]], dtype=np.float32)
    >>> np.round(layer(x), 3)
    array([[-1.069, -0.535,  0.   ,  1.604],
           [-1.   , -1.   ,  1.   ,  1.   ]], dtype=float32)

    Over the two trailing dims of ``(N, L, D)`` input:

    >>> layer = nbnorm.LayerNorm((3, 5))
    >>> layer.weight.shape
    (3, 5)
    >>> layer(np.ones((8, 3, 5), np.float32)).shape
    (8, 3, 5)
    """

    def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        super().__init__(normalized_shape, eps, elementwise_affine, bias, dtype)

    def _forward(self, x):
        axis = self._axis(x)
        y, mean, invstd = layer_norm(x, self.weight, self.bias, axis=axis, eps=self.eps)
        return y, (x, axis, mean, invstd)

    def _backward(self, dy, saved):
        x, axis, mean, invstd = saved
        return layer_norm_backward(dy, x, mean, invstd, self.weight, axis=axis)


class RMSNorm(_Trailing):
    """RMS normalization over the trailing ``normalized_shape`` dims (PyTorch's
    RMSNorm: ``eps=None`` is the dtype's machine epsilon).

    ``y = x·rstd·weight`` with ``rstd = 1/√(mean(x²) + eps)`` over the
    trailing dims (see :func:`rms_norm`); the same in every mode.  The layer
    has no bias.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing dims normalized over (positive ints, at least one);
        ``weight`` has this shape.
    eps : float or None, optional
        Added to ``mean(x²)`` before the square root; finite and ≥ 0.  None
        (the default) is the machine epsilon of the input's dtype.
    elementwise_affine : bool, optional
        If True (the default), the layer has a learnable ``weight`` (ones).
    dtype : dtype, optional
        The dtype of the parameters: float16, float32 (the default) or
        float64.

    Attributes
    ----------
    weight : ndarray or None
        The scale, of shape ``normalized_shape``; None when not
        ``elementwise_affine``.
    weight_grad : ndarray or None
        The gradient of ``weight`` of the last :meth:`backward`
        (``bias_grad`` is always None).
    device : str
        ``"cpu"`` or ``"cuda"`` (see :meth:`to`).

    Raises
    ------
    TypeError
        If an entry of ``normalized_shape`` is not an int, ``eps`` not a real
        number or None, or ``dtype`` not float16, float32 or float64.
    ValueError
        If ``normalized_shape`` is empty or has an entry < 1, or ``eps`` is
        negative or not finite.

    See Also
    --------
    rms_norm : The forward.
    rms_norm_backward : The gradients.
    LayerNorm : Normalization by the mean and variance.

    Examples
    --------
    >>> layer = nbnorm.RMSNorm(4)
    >>> x = np.array([[1.0, 2.0, 2.0, 4.0], [3.0, 0.0, 4.0, 0.0]], dtype=np.float32)
    >>> np.round(layer(x), 3)
    array([[0.4, 0.8, 0.8, 1.6],
           [1.2, 0. , 1.6, 0. ]], dtype=float32)
    >>> list(layer.state_dict())
    ['weight']
    """

    def __init__(self, normalized_shape, *, eps=None, elementwise_affine=True, dtype=np.float32):
        super().__init__(normalized_shape, eps, elementwise_affine, False, dtype)

    def _forward(self, x):
        axis = self._axis(x)
        y, rstd = rms_norm(x, self.weight, axis=axis, eps=self.eps)
        return y, (x, axis, rstd)

    def _backward(self, dy, saved):
        x, axis, rstd = saved
        dx, dweight = rms_norm_backward(dy, x, rstd, self.weight, axis=axis)
        return dx, dweight, None
