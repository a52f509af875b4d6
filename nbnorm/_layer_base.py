"""What every normalization layer shares: parameters and buffers, the mode
(train / eval / frozen), the forward saved for ``backward``, PyTorch-keyed
state dicts and the device the arrays live on.

A layer holds its arrays as attributes named as in PyTorch (``weight``,
``bias``, ``running_mean``, ``running_var``; ``num_batches_tracked`` is a
Python int), NumPy arrays on the host or Numba device arrays after
``to("cuda")``.  Subclasses list which exist (``_arrays``) and implement
``_forward(x)`` → ``(y, saved)`` and ``_backward(dy, saved)`` → ``(dx, dweight, dbias)``.
"""
from __future__ import annotations

import operator

import numpy as np

from . import _validate as V
from ._router import is_cuda_array as _on_device


def _host(value, key, who="load_state_dict"):
    """``value`` (NumPy, anything ``np.asarray`` reads, a torch tensor on any
    device, a Numba device array) as a NumPy array; ``TypeError`` naming
    ``who`` and ``key`` when it cannot be read.  torch's bfloat16 (which NumPy
    has no dtype for) is read as float32, exactly."""
    try:
        if hasattr(value, "detach"):                       # torch
            value = value.detach()
            if str(getattr(value, "dtype", "")) == "torch.bfloat16":
                value = value.float()
            value = value.cpu().numpy()
        elif hasattr(value, "copy_to_host"):               # Numba device array
            value = value.copy_to_host()
        elif hasattr(value, "get") and type(value).__module__.split(".")[0] == "cupy":
            value = value.get()
        return np.asarray(value)
    except Exception as e:
        raise TypeError(f"{who}: {key!r}: cannot read {type(value).__name__} as an "
                        f"array: {e}") from None


_INT64_MAX = np.iinfo(np.int64).max


def _count(value, key):
    """``num_batches_tracked`` as a Python int: a 0-d integer (or exactly
    integral float) in ``0..2**63 - 1``; ``TypeError`` for bools, complex,
    strings and other non-numbers, ``ValueError`` for the rest."""
    v = _host(value, key)
    if v.shape != ():
        raise ValueError(f"load_state_dict: {key!r}: expected shape () (a single count), "
                         f"got {v.shape}")
    kind = v.dtype.kind
    item = v.item()
    if kind == "O" and isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        kind = "i"                         # a Python int too large for int64
    if kind in "iu":
        n = int(item)
    elif kind == "f":
        f = float(item)
        if not np.isfinite(f) or f != np.floor(f):
            raise ValueError(f"load_state_dict: {key!r}: expected a non-negative integer, "
                             f"got {item!r} (not a finite whole number)")
        n = int(f)
    else:
        raise TypeError(f"load_state_dict: {key!r}: expected a non-negative integer, got "
                        f"{item!r} of dtype {v.dtype}")
    if not 0 <= n <= _INT64_MAX:
        raise ValueError(f"load_state_dict: {key!r}: expected a non-negative integer that fits "
                         f"int64 (0..{_INT64_MAX}), got {n}")
    return n


def _buffer(value, key, want, dtype):
    """A parameter or running statistic as a host array of ``dtype`` (a new
    copy), after checking it: readable, real numbers (float or int; not
    bool, complex, strings, objects — ``TypeError``), of shape ``want``,
    finite in ``dtype`` and, for ``running_var``, ``>= 0`` (``ValueError``)."""
    v = _host(value, key)
    if v.dtype.kind not in "fiu":
        raise TypeError(f"load_state_dict: {key!r}: expected numbers (a real float or "
                        f"integer array), got dtype {v.dtype}")
    if v.shape != want:
        raise ValueError(f"load_state_dict: {key!r}: expected shape {want}, got {v.shape}")
    if not np.all(np.isfinite(v)):
        bad = v[~np.isfinite(v)].flat[0]
        raise ValueError(f"load_state_dict: {key!r}: expected finite values, got {bad}")
    with np.errstate(over="ignore"):
        cast = v.astype(dtype)
    if not np.all(np.isfinite(cast)):
        bad = v[~np.isfinite(cast)].flat[0]
        raise ValueError(f"load_state_dict: {key!r}: {bad} is out of the range of the layer's "
                         f"{dtype} (largest {np.finfo(dtype).max})")
    if key == "running_var" and np.any(v < 0):        # before rounding: -1e-30 too
        bad = v[v < 0].flat[0]
        raise ValueError(f"load_state_dict: {key!r}: a variance must be >= 0, got {bad}")
    return cast


def positive_int(v, name):
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}") from None
    if v < 1:
        raise ValueError(f"{name}: expected a positive int, got {v}")
    return v


def float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float16, np.float32, np.float64):
        raise TypeError(f"dtype: expected float16, float32 or float64, got {dt}")
    return dt


class NormLayer:
    """Base of the normalization layers (see the module docstring)."""

    _arrays: tuple = ()           # names of the array attributes this layer has

    def __init__(self, eps, dtype):
        self.eps = V.eps_value(eps) if eps is not None else None
        self.dtype = float_dtype(dtype)
        self.training = True
        self.frozen = False
        self.device = "cpu"
        self.num_batches_tracked = 0
        self.weight_grad = None
        self.bias_grad = None
        self._saved = None

    # ------------------------------------------------------------- modes
    def train(self, mode=True):
        """Training mode (batch statistics; running statistics updated).

        Parameters
        ----------
        mode : bool, optional
            True (the default) for training mode, False for eval mode (as
            :meth:`eval`).  Either leaves frozen mode.

        Returns
        -------
        self : object
            The layer itself.

        Examples
        --------
        >>> layer = nbnorm.BatchNorm(3).eval()
        >>> layer.train().mode
        'train'
        >>> layer.train(False).mode
        'eval'
        """
        self.training, self.frozen = bool(mode), False
        return self

    def eval(self):
        """Inference mode: running statistics where the layer tracks them;
        nothing is saved for ``backward``.

        Layers without running statistics (``GroupNorm``, ``LayerNorm``,
        ``RMSNorm``, and ``BatchNorm``/``InstanceNorm`` with
        ``track_running_stats=False``) use the statistics of each input, as
        in training.

        Returns
        -------
        self : object
            The layer itself.

        Examples
        --------
        >>> layer = nbnorm.BatchNorm(2).eval()
        >>> layer.mode
        'eval'
        >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
        >>> np.round(layer(x), 3)     # running mean 0, running variance 1
        array([[1., 2.],
               [3., 4.]], dtype=float32)
        """
        return self.train(False)

    def freeze(self):
        """Frozen mode: the running statistics in the forward *and* the
        backward (``training=False``: no gradient through the statistics), as
        used to fine-tune with small batches; parameter gradients are still
        computed.

        Layers without running statistics compute in frozen mode as in
        training (their forward is saved for :meth:`backward`).

        Returns
        -------
        self : object
            The layer itself.

        Examples
        --------
        >>> layer = nbnorm.BatchNorm(2).freeze()
        >>> layer.mode
        'frozen'
        >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
        >>> y = layer(x)
        >>> np.round(layer.backward(np.ones_like(x)), 3)
        array([[1., 1.],
               [1., 1.]], dtype=float32)
        >>> layer.bias_grad
        array([2., 2.], dtype=float32)
        """
        self.training, self.frozen = False, True
        return self

    @property
    def mode(self):
        """The layer's mode: ``"train"``, ``"eval"`` or ``"frozen"``.

        Examples
        --------
        >>> nbnorm.LayerNorm(4).mode
        'train'
        >>> nbnorm.LayerNorm(4).freeze().mode
        'frozen'
        """
        return "train" if self.training else ("frozen" if self.frozen else "eval")

    # ----------------------------------------------------------- calling
    def __call__(self, x):
        """Normalize ``x`` in the layer's mode; returns ``y``.

        Training: the statistics of ``x`` itself (``BatchNorm`` per channel
        over every other axis, ``InstanceNorm`` per sample and channel,
        ``GroupNorm`` per sample and group, ``LayerNorm``/``RMSNorm`` over
        the trailing ``normalized_shape`` dims), the running statistics
        updated in place where the layer tracks them.  Eval: the running
        statistics where tracked, else the statistics of ``x``.  Frozen: as
        eval, and saved for a :meth:`backward` (with ``training=False`` where
        the running statistics were used).  Training and frozen calls save
        ``x`` and its statistics for :meth:`backward`; eval calls save nothing.

        Parameters
        ----------
        x : ndarray
            The input, float16, float32 or float64, on the layer's device
            (a host array for a ``"cpu"`` layer, a CUDA array after
            ``to("cuda")``).
            ``BatchNorm``, ``InstanceNorm`` and ``GroupNorm`` take at least 2
            dimensions, the batch first and the layer's channel count on
            ``channel_axis``; ``LayerNorm`` and ``RMSNorm`` take trailing
            dimensions equal to ``normalized_shape``.

        Returns
        -------
        ndarray
            The normalized input, ``x``'s shape and dtype.

        Raises
        ------
        TypeError
            If ``x`` is on another device than the layer's arrays, or of an
            unsupported dtype (the functions' ``TypeError``).
        ValueError
            If ``x``'s shape does not fit the layer (too few dimensions,
            another channel count, other trailing dims), or a training batch
            has a single value per statistic (``BatchNorm``; ``InstanceNorm``
            when it tracks running statistics), as the functions raise.

        Warns
        -----
        RuntimeWarning
            If a batch statistic is not finite in training; its running
            entries are left unchanged.

        See Also
        --------
        batch_norm_forward : What ``BatchNorm`` runs in training.
        batch_norm_inference : What ``BatchNorm`` runs with running statistics.
        instance_norm : What ``InstanceNorm`` runs with batch statistics.
        group_norm : What ``GroupNorm`` runs.
        layer_norm : What ``LayerNorm`` runs.
        rms_norm : What ``RMSNorm`` runs.

        Examples
        --------
        >>> layer = nbnorm.BatchNorm(4)
        >>> x = np.array([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 4.0, 4.0], [0.0, 1.0, 1.0, 2.0]],
        ...              dtype=np.float32)
        >>> np.round(layer(x), 3)
        array([[ 0.   ,  0.707,  0.267,  1.225],
               [ 1.225,  0.707,  1.069,  0.   ],
               [-1.225, -1.414, -1.336, -1.225]], dtype=float32)
        >>> np.round(layer.running_mean, 3)
        array([0.1  , 0.167, 0.267, 0.4  ], dtype=float32)
        >>> layer.num_batches_tracked
        1
        """
        name = type(self).__name__
        if _on_device(x) != (self.device == "cuda"):
            where = "a CUDA array" if _on_device(x) else "a host array"
            raise TypeError(f"{name}: x is {where} but the layer's parameters are on "
                            f"{self.device!r}; move the layer with "
                            f"layer.to({'cuda' if _on_device(x) else 'cpu'!r}) first")
        y, saved = self._forward(x)
        self._saved = saved if (self.training or self.frozen) else None
        return y

    def backward(self, dy):
        """``dx`` for the last training-mode (or frozen) call; sets
        ``weight_grad``/``bias_grad`` (None where the layer has no such
        parameter).

        The gradients are those of the function the call ran (see
        :func:`batch_norm_backward`, :func:`layer_norm_backward` and the
        others); in frozen mode the statistics are constants
        (``training=False``).

        Parameters
        ----------
        dy : ndarray
            The gradient of the loss with respect to the last output: the
            shape and dtype of the last input, on the layer's device.

        Returns
        -------
        ndarray
            The gradient with respect to the last input, its shape and dtype.

        Raises
        ------
        RuntimeError
            If there is no saved call: none yet, or the last one was in eval
            mode (or the layer was moved with :meth:`to` since).
        ValueError
            If ``dy``'s shape differs from the last input's.
        TypeError
            If ``dy``'s dtype differs from the last input's (or is not
            float16/32/64).

        Examples
        --------
        >>> layer = nbnorm.LayerNorm(4)
        >>> x = np.array([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 4.0, 4.0]], dtype=np.float32)
        >>> y = layer(x)
        >>> dy = np.array([[1.0, 0.0, 0.0, -1.0], [0.5, 0.5, -0.5, -0.5]], dtype=np.float32)
        >>> dx = layer.backward(dy)
        >>> dx.shape
        (2, 4)
        >>> layer.bias_grad
        array([ 1.5,  0.5, -0.5, -1.5], dtype=float32)
        >>> np.round(layer.weight_grad, 3)
        array([-1.569, -0.5  , -0.5  , -2.104], dtype=float32)
        """
        name = type(self).__name__
        if self._saved is None:
            raise RuntimeError(f"{name}.backward: no forward to differentiate; call the layer "
                               f"in training mode (or frozen, after freeze()) first — eval-mode "
                               f"calls save nothing")
        x = self._saved[0]
        if tuple(getattr(dy, "shape", ())) != tuple(x.shape):
            raise ValueError(f"{name}.backward: dy: expected the shape of the last input "
                             f"{tuple(x.shape)}, got {tuple(getattr(dy, 'shape', ()))}")
        dx, dweight, dbias = self._backward(dy, self._saved)
        self.weight_grad = dweight if getattr(self, "weight", None) is not None else None
        self.bias_grad = dbias if getattr(self, "bias", None) is not None else None
        return dx

    # ------------------------------------------------------------- state
    def _state_keys(self):
        keys = [k for k in self._arrays if getattr(self, k) is not None]
        if getattr(self, "running_mean", None) is not None:
            keys.append("num_batches_tracked")
        return keys

    def state_dict(self):
        """PyTorch's keys → NumPy arrays (copies; ``num_batches_tracked`` a 0-d int64).

        The keys are those of the arrays the layer has, in PyTorch's order:
        ``weight`` and ``bias`` (when affine), ``running_mean``,
        ``running_var`` and ``num_batches_tracked`` (when tracking running
        statistics).  Device arrays are copied to the host.

        Returns
        -------
        dict
            Key → NumPy array, loadable with :meth:`load_state_dict` or into
            PyTorch's module of the same kind (after ``torch.as_tensor``).

        Examples
        --------
        >>> layer = nbnorm.BatchNorm(2)
        >>> _ = layer(np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32))
        >>> state = layer.state_dict()
        >>> list(state)
        ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
        >>> state["running_mean"], state["num_batches_tracked"]
        (array([0.2, 0.4], dtype=float32), array(1))
        >>> nbnorm.LayerNorm(4, elementwise_affine=False).state_dict()
        {}
        """
        out = {}
        for k in self._state_keys():
            v = getattr(self, k)
            out[k] = (np.array(v, np.int64) if k == "num_batches_tracked"
                      else np.array(_host(v, k, "state_dict"), copy=True))
        return out

    def load_state_dict(self, state, strict=True):
        """Load arrays saved by :meth:`state_dict` (or PyTorch's module of the
        same kind): NumPy arrays, anything ``np.asarray`` reads, torch tensors
        on any device.

        Everything is checked before anything is assigned, so a call that
        raises leaves the layer exactly as it was:

        - keys: with ``strict``, exactly :meth:`state_dict`'s (``KeyError``
          listing the missing and unexpected ones); without, unexpected keys
          are ignored and missing ones keep their values;
        - ``weight``, ``bias``, ``running_mean``, ``running_var``: real
          numbers (float or integer arrays; bool, complex, strings, objects:
          ``TypeError``) of the layer's shape, finite once converted to the
          layer's dtype (NaN, inf, or a value past that dtype's largest:
          ``ValueError``; PyTorch would load them, but no such layer computes
          anything finite); ``running_var`` also ``>= 0``, before rounding
          (``-1e-30`` is refused; ``ValueError``);
        - ``num_batches_tracked``: a single (0-d) non-negative integer that
          fits int64 — an integer, or a float that is exactly a whole number
          (2.0 loads, 2.7 raises ``ValueError``; bool, complex, strings:
          ``TypeError``).

        Errors name the key.  The arrays are copied, never shared with ``state``.

        Parameters
        ----------
        state : mapping
            Key → array (a dict, or any object with ``keys()`` and item access).
        strict : bool, optional
            If True (the default), the keys must be exactly those of
            :meth:`state_dict`; if False, unexpected keys are ignored and
            missing ones keep their values.

        Returns
        -------
        self : object
            The layer itself, its arrays replaced by converted copies (on the
            layer's device, in its dtype).

        Raises
        ------
        TypeError
            If ``state`` is not a mapping, or a value cannot be read as an
            array or holds no real numbers (bool, complex, strings, objects).
        KeyError
            With ``strict``, if keys are missing or unexpected.
        ValueError
            If an array has another shape than the layer's, a value is not
            finite in the layer's dtype, ``running_var`` has a negative
            entry, or ``num_batches_tracked`` is not a single whole number in
            ``0..2**63 - 1``.

        Examples
        --------
        >>> source = nbnorm.BatchNorm(2)
        >>> _ = source(np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32))
        >>> target = nbnorm.BatchNorm(2).load_state_dict(source.state_dict())
        >>> target.running_mean, target.num_batches_tracked
        (array([0.2, 0.4], dtype=float32), 1)
        >>> target = target.load_state_dict({"weight": [2, 3]}, strict=False)
        >>> target.weight
        array([2., 3.], dtype=float32)
        """
        if not (hasattr(state, "keys") and hasattr(state, "__getitem__")):
            raise TypeError(f"load_state_dict: expected a mapping of names to arrays (a dict), "
                            f"got {type(state).__name__}")
        keys = self._state_keys()
        missing = [k for k in keys if k not in state]
        unexpected = [k for k in state.keys() if k not in keys]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys "
                           f"{unexpected} (expected exactly {keys})")
        new = {}
        for k in keys:
            if k not in state:
                continue
            if k == "num_batches_tracked":
                new[k] = _count(state[k], k)
            else:
                new[k] = _buffer(state[k], k, tuple(getattr(self, k).shape), self.dtype)
        # placed (copied to the device) before any is assigned: a failed copy changes nothing
        placed = {k: (v if k == "num_batches_tracked" else self._place(v)) for k, v in new.items()}
        for k, v in placed.items():
            setattr(self, k, v)
        return self

    # ------------------------------------------------------------ devices
    def _place(self, host):
        if self.device == "cuda":
            from numba import cuda
            return cuda.to_device(np.ascontiguousarray(host))
        return np.ascontiguousarray(host)

    def to(self, device):
        """Move parameters and buffers to ``"cuda"`` (Numba device arrays) or
        ``"cpu"`` (NumPy); returns the layer.

        The layer then takes inputs on that device only.  A saved forward is
        dropped (call the layer again before :meth:`backward`).

        Parameters
        ----------
        device : str
            ``"cpu"`` or ``"cuda"``; a device index after a colon
            (``"cuda:0"``) is accepted and ignored.

        Returns
        -------
        self : object
            The layer itself.

        Raises
        ------
        ValueError
            If ``device`` is neither ``"cpu"`` nor ``"cuda"``.

        Examples
        --------
        >>> layer = nbnorm.GroupNorm(2, 4)
        >>> layer.to("cpu") is layer
        True
        >>> layer.device
        'cpu'
        """
        d = str(device).split(":")[0]
        if d not in ("cpu", "cuda"):
            raise ValueError(f"to: expected 'cpu' or 'cuda', got {device!r}")
        arrays = {k: _host(getattr(self, k), k, "to") for k in self._arrays
                  if getattr(self, k) is not None}
        self.device = d
        for k, v in arrays.items():
            setattr(self, k, self._place(v))
        self._saved = None
        return self

    def __repr__(self):
        return f"{type(self).__name__}({self._describe()}, mode={self.mode!r}, " \
               f"device={self.device!r})"
