"""A bounded pool of large output buffers (CPU).

A fresh large NumPy array costs more than the kernel that fills it: the
operating system hands out new pages, each zeroed and mapped at its first
touch (about 10 ms per 100 MB here, as much as a whole normalization pass),
and frees them again when the array dies.  Outputs of ``MIN_BYTES`` and up
are therefore carved from blocks that stay mapped: when the last array
using a block dies, the block returns to this pool and the next output of
the same size reuses it, pages already in place.

The pool is bounded (``limit`` bytes of idle blocks, default the smaller of
1 GiB and 1/8 of physical memory; environment variable
``NBNORM_POOL_BYTES``, 0 disables it) and :func:`nbnorm.release_memory`
empties it.  Arrays handed out are plain ``np.ndarray``s; their ``base`` is
the block's holder, whose death (the array's and all its views') returns
the block.  A forked child starts with an empty pool.
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from . import _layout
from ._calls import moments_calls

MIN_BYTES = 8 << 20          # outputs from this size on come from the pool
GRAIN = 1 << 20              # block sizes are rounded up to this
SKEW = 2048 + 64             # an output starts this far into its block (see empty_like)


def _default_limit():
    env = os.environ.get("NBNORM_POOL_BYTES")
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            raise ValueError(f"NBNORM_POOL_BYTES: expected a number of bytes, got {env!r}") \
                from None
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 8 << 30
    return min(1 << 30, phys // 8)


def _give_back(holder):
    block = holder.block
    if _pool is not None:
        _pool.give_back(block)


_HOLDERS = {}


def _holder(block):
    """A buffer exporter over ``block`` that is *not* an ndarray — NumPy would
    collapse an ndarray base to the block itself — and gives the block back
    when it dies, i.e. when no array built on it (nor any view) is left."""
    n = block.nbytes
    kind = _HOLDERS.get(n)
    if kind is None:
        kind = _HOLDERS[n] = type("PooledBlock", (ctypes.c_char * n,), {"__del__": _give_back})
    h = kind.from_buffer(block)
    h.block = block
    return h


class Pool:
    def __init__(self, limit):
        self.limit = int(limit)
        self.idle = {}               # block size → [blocks]
        self.idle_bytes = 0
        self.lock = threading.Lock()

    def take(self, nbytes, fresh):
        """A block of at least ``nbytes`` (rounded to ``GRAIN``): an idle one,
        or ``fresh(size)`` → a new uint8 array."""
        size = -(-nbytes // GRAIN) * GRAIN
        with self.lock:
            blocks = self.idle.get(size)
            if blocks:
                self.idle_bytes -= size
                return blocks.pop()
        return fresh(size)

    def give_back(self, block):
        with self.lock:
            if self.idle_bytes + block.nbytes <= self.limit:
                self.idle.setdefault(block.nbytes, []).append(block)
                self.idle_bytes += block.nbytes

    def release(self):
        """Drop every idle block; returns the bytes released."""
        with self.lock:
            n = self.idle_bytes
            self.idle = {}
            self.idle_bytes = 0
        return n


_pool = Pool(_default_limit())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.release)


def empty_like(x, fresh):
    """An uninitialized array of ``x``'s shape and dtype in its memory order;
    from the pool when large (``fresh(nbytes)`` makes a new uint8 block).

    The array starts ``SKEW`` bytes into its block: large NumPy arrays all
    sit at the same offset within a 4 KiB page, and an output whose rows lie
    at the same page offsets as its input's stalls the CPU's loads behind its
    stores (4K aliasing: rows of 1 KiB ran 1.7× slower)."""
    nbytes = x.size * x.dtype.itemsize
    if nbytes < MIN_BYTES or _pool.limit == 0:
        return None
    block = _pool.take(nbytes + SKEW, fresh)
    return np.ndarray(x.shape, x.dtype, buffer=_holder(block), offset=SKEW,
                      strides=_layout.dense_strides(x.shape, x.strides, x.dtype.itemsize))


def release_memory():
    """Free the idle output blocks nbnorm keeps for reuse (see :mod:`nbnorm._pool`)
    and forget the remembered call signatures (:mod:`nbnorm._calls`); returns
    the number of bytes released."""
    moments_calls.clear()
    return _pool.release()


def set_pool_limit(nbytes):
    """Bound the idle blocks kept for reuse to ``nbytes`` (0 disables the pool);
    returns the previous bound."""
    prev = _pool.limit
    _pool.limit = max(0, int(nbytes))
    if _pool.idle_bytes > _pool.limit:
        _pool.release()
    return prev
