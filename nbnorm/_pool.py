"""A bounded pool of large output buffers (CPU).

A fresh large NumPy array costs more than the kernel that fills it: the
operating system hands out new pages, each zeroed and mapped at its first
touch (about 10 ms per 100 MB here, as much as a whole normalization pass),
and frees them again when the array dies.  Outputs of ``MIN_BYTES`` and up
are therefore carved from blocks that stay mapped: when the last array
using a block dies, the block returns to this pool and the next output of
the same size reuses it, pages already in place.

The pool is bounded (``limit`` bytes of idle blocks, default the smaller of
1 GiB and 1/8 of physical memory) and :func:`nbnorm.release_memory`
empties it.  Environment variable ``NBNORM_POOL_BYTES`` sets the bound: a
number ≥ 0 (``1000000``, ``1e9``, ``1.5``…, rounded down to whole bytes)
with an optional unit, case-insensitive: ``B``; ``K``, ``M``, ``G``, ``T``
and ``KiB``, ``MiB``, ``GiB``, ``TiB`` are powers of 1024; ``KB``, ``MB``,
``GB``, ``TB`` powers of 1000 (``512M`` = ``512MiB`` = 512·2²⁰, ``512MB`` =
512·10⁶); 0 disables the pool.  Anything else (negative, NaN, inf,
``1e999``, an unknown unit) makes ``import nbnorm`` raise a ValueError
naming the variable.

Arrays handed out are plain ``np.ndarray``s; their ``base`` chain ends in
the block's :class:`_Holder`, whose death (the array's and all its views')
returns the block.

No path through the pool can hang:

- giving a block back never waits: when the pool is held (by another
  thread, or by this thread's own pool call that a finalizer or a signal
  handler interrupted) the block goes onto ``Pool.returned``, a deque
  (appends and pops are atomic), and the next pool call sorts it in
  (with the pool disabled it is dropped);
- the lock is reentrant and ``Pool.busy`` marks a call under way, so a
  finalizer or signal handler that calls into the pool while this thread
  is in it does not touch the pool's state: ``take`` makes a fresh block,
  ``release`` drops only the returned blocks;
- a forked child gets a new, empty pool (same limit) and never touches
  the parent's lock, which another thread of the parent may have held.
"""
from __future__ import annotations

import math
import numbers
import os
import re
import threading
from collections import deque
from contextlib import contextmanager

import numpy as np

from . import _layout
from ._calls import calls

MIN_BYTES = 8 << 20          # outputs from this size on come from the pool
GRAIN = 1 << 20              # block sizes are rounded up to this
SKEW = 2048 + 64             # an output starts this far into its block (see empty_like)

_SIZE = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)\s*", re.I)
_UNITS = {"": 1, "b": 1, **{p + suffix: base ** i for i, p in enumerate("kmgt", 1)
                            for suffix, base in (("", 1024), ("ib", 1024), ("b", 1000))}}


def parse_bytes(text, name="NBNORM_POOL_BYTES"):
    """``text`` (see the module docstring) as a number of bytes ≥ 0, or a
    ValueError naming ``name``."""
    m = _SIZE.fullmatch(text)
    unit = _UNITS.get(m[2].lower()) if m else None
    value = float(m[1]) * unit if unit else math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a number of bytes >= 0 with an optional unit "
                         f"(e.g. 1000000, 1e9, 64k, 512M or 512MiB = 512*2**20, "
                         f"512MB = 512*10**6, 1.5GiB), got {text!r}")
    return int(value)


def _default_limit():
    env = os.environ.get("NBNORM_POOL_BYTES")
    if env is not None:
        return parse_bytes(env)
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 8 << 30
    return min(1 << 30, phys // 8)


class _Holder:
    """The owner NumPy sees for a pooled output's memory: one class for every
    block size, *not* an ndarray (NumPy would collapse an ndarray base to
    the block, which never dies); it exports the whole block as uint8
    through ``__array_interface__`` and gives the block back when it dies,
    i.e. when no array built on it (nor any view) is left."""

    __slots__ = ("block",)

    def __init__(self, block):
        self.block = block

    @property
    def __array_interface__(self):
        return {"version": 3, "shape": (self.block.nbytes,), "typestr": "|u1",
                "data": self.block.__array_interface__["data"]}

    def __del__(self):
        if _pool is not None:
            _pool.give_back(self.block)


class Pool:
    """Idle blocks by size, at most ``limit`` bytes of them (rules: see the
    module docstring)."""

    def __init__(self, limit):
        self.limit = int(limit)
        self.idle = {}               # block size → [blocks]
        self.idle_bytes = 0
        self.returned = deque()      # blocks given back while the pool was held
        self.lock = threading.RLock()
        self.busy = False            # a call holds the pool (set and read under lock)

    @contextmanager
    def _held(self, wait=True):
        """Yields whether this call may change the pool: False when a call of
        this thread is already under way (re-entry from a finalizer or a
        signal handler) or, if not ``wait``, another thread holds the lock."""
        if not self.lock.acquire(wait):
            yield False
            return
        try:
            if self.busy:
                yield False
                return
            self.busy = True
            try:
                yield True
            finally:
                self.busy = False
        finally:
            self.lock.release()

    def _keep(self, block):
        if self.idle_bytes + block.nbytes <= self.limit:     # else dropped: freed
            self.idle.setdefault(block.nbytes, []).append(block)
            self.idle_bytes += block.nbytes

    def _sort_in_returned(self):
        while True:
            try:
                block = self.returned.popleft()
            except IndexError:
                return
            self._keep(block)

    def take(self, nbytes, fresh):
        """A block of at least ``nbytes`` (rounded to ``GRAIN``): an idle one,
        or ``fresh(size)`` → a new uint8 array (also when re-entered)."""
        size = -(-nbytes // GRAIN) * GRAIN
        with self._held() as held:
            if held:
                self._sort_in_returned()
                blocks = self.idle.get(size)
                if blocks:
                    self.idle_bytes -= size
                    return blocks.pop()
        return fresh(size)

    def give_back(self, block):
        """Keep ``block`` for reuse if it fits the limit; never waits."""
        with self._held(wait=False) as held:
            if held:
                self._sort_in_returned()
                self._keep(block)
            elif self.limit:
                self.returned.append(block)

    def release(self):
        """Drop every idle block; returns the bytes released (when re-entered,
        only the returned blocks not yet sorted in are dropped)."""
        n = 0
        with self._held() as held:
            if held:
                n, self.idle, self.idle_bytes = self.idle_bytes, {}, 0
            while True:
                try:
                    n += self.returned.popleft().nbytes
                except IndexError:
                    return n


_pool = Pool(_default_limit())


def _after_fork_in_child():
    """A new, empty pool: the old one's lock may have been held by a thread
    that does not exist here."""
    global _pool
    _pool = Pool(_pool.limit)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    return np.ndarray(x.shape, x.dtype, buffer=np.asarray(_Holder(block)), offset=SKEW,
                      strides=_layout.dense_strides(x.shape, x.strides, x.dtype.itemsize))


def release_memory():
    """Free the idle output blocks nbnorm keeps for reuse (see :mod:`nbnorm._pool`)
    and forget the remembered call signatures (:mod:`nbnorm._calls`); returns
    the number of bytes released.

    Large outputs (8 MiB and up) are carved from blocks that stay mapped
    after their arrays die, so that the next output of that size reuses
    them (CPU outputs); this frees the idle ones.  Arrays in
    use are not affected.

    Returns
    -------
    int
        The bytes of idle blocks released (0 when none were idle).

    See Also
    --------
    set_pool_limit : Bound the idle blocks kept.

    Examples
    --------
    >>> previous = nbnorm.set_pool_limit(2**30)      # a pool of up to 1 GiB
    >>> x = np.ones((1024, 2048), np.float32)         # 8 MiB: outputs from the pool
    >>> y, mean, invstd = nbnorm.layer_norm(x)
    >>> del y                                         # its block is idle now
    >>> nbnorm.release_memory() >= x.nbytes
    True
    >>> _ = nbnorm.set_pool_limit(previous)
    """
    calls.clear()
    return _pool.release()


def set_pool_limit(nbytes):
    """Bound the idle blocks kept for reuse to ``nbytes``, a whole number ≥ 0
    (0 disables the pool; ValueError otherwise, TypeError for a non-number);
    returns the previous bound.

    Idle blocks past the new bound are released at once.  The bound at
    import is the smaller of 1 GiB and 1/8 of physical memory, or the
    environment variable ``NBNORM_POOL_BYTES``.

    Parameters
    ----------
    nbytes : int or float
        The new bound in bytes: a whole number ≥ 0 (an integral float such
        as ``1e9`` is accepted); 0 disables the pool.

    Returns
    -------
    int
        The previous bound, in bytes.

    Raises
    ------
    TypeError
        If ``nbytes`` is not a real number (bools included).
    ValueError
        If ``nbytes`` is negative, not a whole number, or not finite.

    See Also
    --------
    release_memory : Release the idle blocks now.

    Examples
    --------
    >>> previous = nbnorm.set_pool_limit(256 * 2**20)
    >>> nbnorm.set_pool_limit(previous)
    268435456
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Real):
        raise TypeError(f"nbytes: expected a number of bytes, got {type(nbytes).__name__}")
    if not isinstance(nbytes, numbers.Integral) and not (math.isfinite(nbytes)
                                                         and nbytes == int(nbytes)):
        raise ValueError(f"nbytes: expected a whole number of bytes, got {nbytes!r}")
    if nbytes < 0:
        raise ValueError(f"nbytes: expected a number of bytes >= 0, got {nbytes!r}")
    prev = _pool.limit
    _pool.limit = int(nbytes)
    if _pool.idle_bytes > _pool.limit:
        _pool.release()
    return prev
