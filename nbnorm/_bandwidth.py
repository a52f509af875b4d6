"""The machine's copy bandwidth: the one reference of every "fraction of copy
bandwidth" nbnorm reports — ``python -m nbnorm``'s "of copy" column, the asv
suite's ``Bandwidth.track_copy_fraction`` and ``bench_as_called``'s 2-pass
limit (``benchmarks/``).  Not public API.

One copy of ``nbytes`` between two arrays written before (their pages
mapped), counted as ``2 · nbytes`` moved (read + write); the bandwidth is
the best of ``repeat`` copies, since it stands for what the machine can do.
CPU: a copy on Numba's threads — the threads nbnorm's kernels run on — so
that a fraction ≈ 1 means a kernel runs at memory speed (one thread, such as
``np.copyto``'s, reaches only part of a many-core machine's memory
bandwidth); CUDA: a device-to-device copy, synchronized.
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

from ._cache import lock_saves


@njit(parallel=True, cache=True)
def _parallel_copy(dst, src):
    n = src.size
    step = 1 << 16
    for i_ in prange((n + step - 1) // step):
        i = np.int64(i_)
        lo = i * step
        hi = min(lo + step, n)
        dst[lo:hi] = src[lo:hi]


lock_saves(_parallel_copy)


def copier(nbytes, backend="cpu"):
    """``(copy, moved)``: a function making one copy of ``nbytes`` between two
    arrays already in memory (on ``backend``: ``"cpu"`` or ``"cuda"``), run once
    here, and the bytes it moves (read + write)."""
    src = np.ones(max(nbytes // 8, 1))
    if backend == "cpu":
        dst = np.empty_like(src)

        def copy():
            _parallel_copy(dst, src)
    else:
        from numba import cuda
        src = cuda.to_device(src)
        dst = cuda.device_array_like(src)

        def copy():
            dst.copy_to_device(src)
            cuda.synchronize()
    copy()
    return copy, 2 * src.nbytes


def copy_bandwidth(nbytes, backend="cpu", repeat=9):
    """Bytes/s of :func:`copier`'s copy of ``nbytes``: the best of ``repeat``."""
    copy, moved = copier(nbytes, backend)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        copy()
        best = min(best, time.perf_counter() - t0)
    return moved / best
