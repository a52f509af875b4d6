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


def _on_device(a):
    """Is ``a`` a CUDA array (``__cuda_array_interface__`` or the simulator's)?"""
    if type(a).__module__.startswith("numba.cuda.simulator"):
        return True
    if type(a).__module__.split(".")[0] == "torch":   # the interface refuses requires_grad
        return a.device.type == "cuda"
    try:
        return hasattr(a, "__cuda_array_interface__")
    except Exception:           # torch CPU tensors raise from the property
        return False


def _host(value, key):
    """``value`` (NumPy, anything ``np.asarray`` reads, a torch tensor on any
    device, a Numba device array) as a NumPy array."""
    if hasattr(value, "detach"):                       # torch
        value = value.detach().cpu().numpy()
    elif hasattr(value, "copy_to_host"):               # Numba device array
        value = value.copy_to_host()
    elif hasattr(value, "get") and type(value).__module__.split(".")[0] == "cupy":
        value = value.get()
    try:
        return np.asarray(value)
    except Exception as e:
        raise TypeError(f"load_state_dict: {key!r}: cannot read {type(value).__name__} as an "
                        f"array: {e}") from None


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
        """Training mode (batch statistics; running statistics updated)."""
        self.training, self.frozen = bool(mode), False
        return self

    def eval(self):
        """Inference mode: running statistics where the layer tracks them;
        nothing is saved for ``backward``."""
        return self.train(False)

    def freeze(self):
        """Frozen mode: the running statistics in the forward *and* the
        backward (``training=False``: no gradient through the statistics), as
        used to fine-tune with small batches; parameter gradients are still
        computed."""
        self.training, self.frozen = False, True
        return self

    @property
    def mode(self):
        return "train" if self.training else ("frozen" if self.frozen else "eval")

    # ----------------------------------------------------------- calling
    def __call__(self, x):
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
        parameter)."""
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
        """PyTorch's keys → NumPy arrays (copies; ``num_batches_tracked`` a 0-d int64)."""
        out = {}
        for k in self._state_keys():
            v = getattr(self, k)
            out[k] = (np.array(v, np.int64) if k == "num_batches_tracked"
                      else np.array(_host(v, k), copy=True))
        return out

    def load_state_dict(self, state, strict=True):
        """Load arrays saved by :meth:`state_dict` (or PyTorch's module of the
        same kind): shapes and keys are checked first (``KeyError``/``ValueError``
        naming the key) and nothing changes unless all of them pass."""
        keys = self._state_keys()
        missing = [k for k in keys if k not in state]
        unexpected = [k for k in state if k not in keys]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys "
                           f"{unexpected} (expected exactly {keys})")
        new = {}
        for k in keys:
            if k not in state:
                continue
            v = _host(state[k], k)
            want = () if k == "num_batches_tracked" else tuple(getattr(self, k).shape)
            if v.shape != want:
                raise ValueError(f"load_state_dict: {k!r}: expected shape {want}, got {v.shape}")
            if not (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_):
                raise TypeError(f"load_state_dict: {k!r}: expected numbers, got dtype {v.dtype}")
            new[k] = v
        for k, v in new.items():
            if k == "num_batches_tracked":
                self.num_batches_tracked = int(v)
            else:
                setattr(self, k, self._place(v.astype(self.dtype)))
        return self

    # ------------------------------------------------------------ devices
    def _place(self, host):
        if self.device == "cuda":
            from numba import cuda
            return cuda.to_device(np.ascontiguousarray(host))
        return np.ascontiguousarray(host)

    def to(self, device):
        """Move parameters and buffers to ``"cuda"`` (Numba device arrays) or
        ``"cpu"`` (NumPy); returns the layer."""
        d = str(device).split(":")[0]
        if d not in ("cpu", "cuda"):
            raise ValueError(f"to: expected 'cpu' or 'cuda', got {device!r}")
        arrays = {k: _host(getattr(self, k), k) for k in self._arrays
                  if getattr(self, k) is not None}
        self.device = d
        for k, v in arrays.items():
            setattr(self, k, self._place(v))
        self._saved = None
        return self

    def __repr__(self):
        return f"{type(self).__name__}({self._describe()}, mode={self.mode!r}, " \
               f"device={self.device!r})"
