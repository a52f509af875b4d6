"""Arrays placed against inaccessible memory, for the memory-placement tests.

:func:`place` copies an array into fresh anonymous pages with a
``PROT_NONE`` guard page on each side, flush against one guard or a few
bytes from it, optionally reversed (a negative-stride view whose first
element is the one next to the guard).  A kernel that reads or writes one
byte outside the array's elements faults at once instead of reading a
neighbour's memory; run such code in a subprocess (``memory_job.py``).
"""
from __future__ import annotations

import ctypes
import mmap

import numpy as np

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _protect(address):
    if _libc.mprotect(address, PAGE, 0) != 0:      # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect failed")


def place(a, side="after", gap=0, reverse=False):
    """A copy of ``a`` (C order) in guarded memory.

    ``side="after"``: its last byte lies ``gap`` bytes before a guard page;
    ``"before"``: its first byte lies ``gap`` bytes after one.  ``gap`` not a
    multiple of the item size gives a misaligned array (NumPy accepts those
    as views of byte buffers).  ``reverse``: the result is ``c[::-1]`` along
    every axis of the placed copy ``c`` (the memory next to the guard is
    then read first on the "after" side)."""
    a = np.asarray(a)
    nbytes = a.nbytes
    pages = -(-(nbytes + gap) // PAGE) + 2
    m = mmap.mmap(-1, pages * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    _protect(base)
    _protect(base + (pages - 1) * PAGE)
    start = PAGE + gap if side == "before" else (pages - 1) * PAGE - gap - nbytes
    buf = np.frombuffer(m, np.uint8, count=nbytes, offset=start)
    c = buf.view(a.dtype).reshape(a.shape) if nbytes else np.empty(a.shape, a.dtype)
    c[...] = a[tuple(slice(None, None, -1) for _ in a.shape)] if reverse else a
    if reverse:
        c = c[tuple(slice(None, None, -1) for _ in a.shape)]
    return c


def address(a):
    return a.__array_interface__["data"][0]
