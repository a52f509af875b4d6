"""The part of NumPy's API that grouped statistics (``by=``,
:mod:`nbnorm._grouped`) use, for CUDA device arrays.

``x`` and ``z`` stay on the device: each run of equal labels is a device
view, reduced and normalized by the backend's kernels.  Only the small
per-group arrays (statistics, coefficients: one value per group and kept
index) are stacked or computed on the host and copied back.
"""
from __future__ import annotations

import numpy as np

from .arrays import empty_like as _empty_like
from .backend import from_host, to_host

__all__ = ["to_host", "from_host", "stack", "zeros", "output_like"]


def stack(arrays):
    return from_host(np.stack([to_host(a) for a in arrays]))


def zeros(shape, dtype=np.float64):
    return from_host(np.zeros(shape, dtype))


def output_like(x):
    """A dense device array of ``x``'s shape and dtype, in its memory order
    (``z`` is written into it run by run)."""
    return _empty_like(x)
