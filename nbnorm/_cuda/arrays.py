"""CUDA arrays: what the backend accepts, the stream it launches on, flat
views for the kernels and new outputs.

Accepts any ``__cuda_array_interface__`` object (Numba device arrays, CuPy,
PyTorch CUDA tensors) and the simulator's device arrays, without copying
them.  Stream rule: kernels run on the stream ``x`` says it is on (the CAI
``stream`` field, which CuPy sets to its current stream; for a PyTorch
tensor, whose interface names none, torch's current stream on its device;
Numba's array ``.stream``; else the default stream).  Any other operand on a
different stream is synchronized before the first launch, so the caller
never races a kernel; results are bound to that same stream.
"""
from __future__ import annotations

from math import prod

import numpy as np
from numba import cuda

from .. import _layout, _welford
from .device import SIM


def _is_sim_array(obj):
    return type(obj).__module__.startswith("numba.cuda.simulator")


def asarray(obj, argname):
    """A Numba device array (or simulator array) viewing ``obj``'s memory."""
    if SIM:
        if _is_sim_array(obj):
            return obj
        raise TypeError(f"{argname}: the CUDA simulator only accepts its own device arrays, "
                        f"got {type(obj).__module__}.{type(obj).__qualname__}")
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    if isinstance(obj, DeviceNDArray):
        return obj
    torch_stream = None
    if _module(obj) == "torch":
        if obj.requires_grad:
            obj = obj.detach()          # an nn.Parameter: the same memory, no copy
        torch_stream = _torch_stream(obj)
    try:
        arr = cuda.as_cuda_array(obj, sync=False)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise TypeError(f"{argname}: cannot use {type(obj).__qualname__} as a CUDA array: {e}") \
            from None
    return arr if torch_stream is None else arr.bind(torch_stream)


def _module(obj):
    return type(obj).__module__.split(".")[0]


def _torch_stream(tensor):
    """PyTorch's current stream on the tensor's device as a Numba stream
    (None for the legacy default stream): torch's ``__cuda_array_interface__``
    names no stream, and the kernel that produced ``tensor`` may still be
    running on that one."""
    import torch
    handle = torch.cuda.current_stream(tensor.device).cuda_stream
    return cuda.external_stream(handle) if handle else None


#: an argument written in place is any device array ``asarray`` accepts (writable by nature)
target = asarray


def to_device_like(host):
    """Copy ``host`` to the device keeping its exact layout (strides, gaps,
    negative steps): the memory block it views is copied whole, and a device
    view with ``host``'s shape and strides is returned."""
    owner = host
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    owner = np.asarray(owner)
    if not (owner.flags.c_contiguous or owner.flags.f_contiguous):
        raise ValueError("to_device_like: the array's memory owner must be contiguous")
    d = cuda.to_device(owner.ravel(order="K").view(np.uint8))
    shift = host.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(np.lib.stride_tricks.as_strided(
            d._ary[shift:].view(host.dtype), host.shape, host.strides))
    cai = d.__cuda_array_interface__
    desc = {"shape": host.shape, "strides": host.strides, "typestr": host.dtype.str, "version": 3,
            "data": (cai["data"][0] + shift, False), "stream": None}
    return cuda.from_cuda_array_interface(desc, owner=d, sync=False)


def wrap(result, like):
    """``result`` as the caller's array type (zero copy): CuPy in → CuPy out,
    PyTorch in → PyTorch out, anything else → Numba device array."""
    mod = _module(like)
    if mod == "cupy":
        return _cupy_view(result, like)
    if mod == "torch":
        import torch
        return torch.as_tensor(result, device=like.device)
    return result


def _cupy_view(result, like):
    """A CuPy array over ``result``'s memory, kept alive by ``result``.
    Built from the pointer (``UnownedMemory``), not through the interface:
    ``cupy.asarray`` would synchronize with the stream the interface names
    and make every call wait for the GPU."""
    import cupy
    if SIM or result.size == 0:
        return cupy.asarray(result)
    itemsize = result.dtype.itemsize
    strides = _layout.element_strides(result, "result")
    span, base = _layout.flat_extent(result.shape, strides)
    ptr = result.__cuda_array_interface__["data"][0]
    memory = cupy.cuda.UnownedMemory(ptr - base * itemsize, span * itemsize, result,
                                     like.device.id)
    return cupy.ndarray(result.shape, result.dtype,
                        cupy.cuda.MemoryPointer(memory, base * itemsize),
                        tuple(s * itemsize for s in strides))


stat_dtype = _welford.stat_dtype    # one definition for every backend


def _stream_handle(s):
    h = int(s) if s else 0
    return 0 if h == 1 else h     # CAI 1 = legacy default stream


def _launch_stream(x, *others):
    """The stream of ``x``; synchronizes operands that live on another stream."""
    if SIM:
        return 0
    stream = getattr(x, "stream", 0) or 0
    h = _stream_handle(stream)
    for a in others:
        if a is None:
            continue
        s = getattr(a, "stream", 0) or 0
        if _stream_handle(s) not in (0, h):
            s.synchronize()
    return stream


def _flat(a):
    """1-D contiguous view of ``a``'s memory from its lowest address."""
    strides = _layout.element_strides(a, "array")
    span, base = _layout.flat_extent(a.shape, strides)
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        from numpy.lib.stride_tricks import as_strided
        h = a._ary
        if span == 0:
            return FakeCUDAArray(np.empty(0, h.dtype))
        lo = (h[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in h.strides)]
              if h.ndim else h.reshape(1))
        return FakeCUDAArray(as_strided(lo, shape=(span,), strides=(h.dtype.itemsize,)))
    if span == 0:
        return cuda.device_array(0, a.dtype)
    ptr0 = a.__cuda_array_interface__["data"][0]
    desc = {"shape": (span,), "strides": None, "typestr": a.dtype.str, "version": 3,
            "data": (ptr0 - base * a.dtype.itemsize, False), "stream": None}
    return cuda.from_cuda_array_interface(desc, owner=a, sync=False)


def empty_like(x, stream=0):
    """Output of ``x``'s shape and dtype, dense, in ``x``'s memory order."""
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(np.empty_like(x._ary, order="K"))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    strides = _layout.dense_strides(x.shape, x.strides, x.dtype.itemsize)
    buf = cuda.device_array(max(prod(x.shape), 1), x.dtype, stream=stream)
    return DeviceNDArray(shape=tuple(x.shape), strides=strides, dtype=x.dtype,
                         gpu_data=buf.gpu_data, stream=stream)



def _bind(a, stream):
    return a if SIM or not stream else a.bind(stream)


def _stat_out(a, shape, stream):
    return _bind(a.reshape(shape), stream)
