"""Host arrays as each implementation's arrays on each backend (NumPy, a
PyTorch tensor, a CuPy array, a Numba device array), with the same logical
shape and memory layout; outputs like them; waiting for queued GPU work."""
from __future__ import annotations

import numpy as np


def _dense_order(a):
    """Permutation that makes the strided view ``a`` C-contiguous, and its inverse."""
    order = tuple(int(i) for i in np.argsort([-s for s in a.strides], kind="stable"))
    inverse = tuple(int(i) for i in np.argsort(order))
    return order, inverse


def to_backend(impl, backend, a):
    """``a`` (host, possibly a transposed view) as ``impl``'s array on ``backend``,
    with the same logical shape and memory layout."""
    if backend == "cpu":
        if impl == "torch":
            import torch
            return torch.from_numpy(a)
        return a
    order, inverse = _dense_order(a)
    dense = np.ascontiguousarray(a.transpose(order))
    if impl == "torch":
        import torch
        return torch.from_numpy(dense).to("cuda").permute(inverse)
    if impl == "cupy":
        import cupy
        return cupy.asarray(dense).transpose(inverse)
    from numba import cuda
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    d = cuda.to_device(dense)
    if order == tuple(range(a.ndim)):
        return d
    view = dense.transpose(inverse)   # same logical shape/strides as ``a``
    return DeviceNDArray(view.shape, view.strides, view.dtype, gpu_data=d.gpu_data)


def empty_like(impl, backend, a):
    """An uninitialised array like ``a`` (same layout) for ``out=`` arguments."""
    if backend == "cpu" and impl != "torch":
        return np.empty_like(a)
    if impl == "nbnorm":
        from numba import cuda
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        order, inverse = _dense_order(a)
        d = cuda.device_array(tuple(a.shape[i] for i in order), dtype=a.dtype)
        strides = tuple(d.strides[i] for i in inverse)
        return DeviceNDArray(a.shape, strides, a.dtype, gpu_data=d.gpu_data)
    if impl == "torch":
        import torch
        return torch.empty_like(a)
    import cupy
    return cupy.empty_like(a)


def synchronize(impl, backend):
    """A function that waits for ``impl``'s queued GPU work (no-op on the CPU)."""
    if backend == "cpu":
        return lambda: None
    if impl == "torch":
        import torch
        return torch.cuda.synchronize
    if impl == "cupy":
        import cupy
        return cupy.cuda.Device().synchronize
    from numba import cuda
    return cuda.synchronize
