"""When a CPU kernel may use Numba's thread pool, and when it must not.

Numba runs every ``parallel=True`` kernel of a process through one
*threading layer*, chosen at the first parallel launch
(``NUMBA_THREADING_LAYER``, else the first of tbb, omp, workqueue that loads):

- ``tbb``: safe with several Python threads and across ``fork`` from a
  process in which one thread used it; a child forked while other threads
  are attached to it can hang in its first parallel region;
- ``omp`` with GNU OpenMP: safe with several Python threads, but a process
  forked after its threads started dies at its first parallel region
  ("fork() called from a process already using GNU OpenMP");
- ``workqueue``: fork-safe, but two launches at once abort the process
  ("Concurrent access has been detected").

So every kernel is compiled twice from one source, a parallel and a serial
build, and :class:`Kernel` picks one per launch:

1. serial inside :func:`serial_if` (problems too small to pay for waking
   threads) and in a child forked from a process whose GNU OpenMP threads
   had started, or whose TBB pool other threads than the forking one had
   used (recorded by an ``os.register_at_fork`` hook);
2. parallel when the layer in use is known to be thread-safe (tbb, omp);
3. otherwise (workqueue, or no layer started yet) parallel only if no other
   thread is launching: a non-blocking lock, and serial when it is taken.

Chunking depends only on the shape, and both builds share the code that
accumulates, so the results are bitwise the same whichever build runs.
Numba's own settings (threading layer, thread count) are never changed.
"""
from __future__ import annotations

import os
import sys
import threading
import types
from contextlib import contextmanager

from numba import njit
from numba.np.ufunc import parallel as _numba_parallel

_THREAD_SAFE_LAYERS = ("tbb", "omp")
_local = threading.local()
_launch_lock = threading.Lock()
_layer = None            # the layer in use once Numba has started one
_pool_lost = False       # set in a child forked after GNU OpenMP started


def _current_layer():
    """The threading layer in use, or None before the first parallel launch."""
    global _layer
    if _layer is None:
        _layer = _numba_parallel._threading_layer
    return _layer


def _gnu_openmp_started():
    omp = sys.modules.get("numba.np.ufunc.omppool")
    return (_numba_parallel._threading_layer == "omp" and omp is not None
            and getattr(omp, "openmp_vendor", "GNU") == "GNU")


_launchers = set()       # threads that have launched a parallel build


def _after_fork_in_child():
    """A child forked from a process whose GNU OpenMP threads started, or
    whose TBB pool was used by a thread other than the forking one, runs
    the serial builds: TBB shuts its workers down at fork only when no
    other thread is attached to it ("Unable to join threads to shut down
    before fork()"), and the child's first parallel region then waits for
    workers that do not exist."""
    global _pool_lost
    others = _launchers - {threading.get_ident()}
    if _gnu_openmp_started() or (_numba_parallel._threading_layer == "tbb" and others):
        _pool_lost = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def parallel_allowed():
    """Whether a launch from this thread, now, may use the thread pool
    without the launch lock (rules 1 and 2 above)."""
    return not (_pool_lost or getattr(_local, "serial", False))


def enter_serial(condition):
    """Start a :func:`serial_if` block without a context manager (the
    prepared calls' fast path); returns what :func:`leave_serial` restores."""
    before = getattr(_local, "serial", False)
    if condition:
        _local.serial = True
    return before


def leave_serial(before):
    _local.serial = before


@contextmanager
def serial_if(condition):
    """Run the kernels launched by this thread inside the block serially
    when ``condition`` holds (other threads are not affected)."""
    before = getattr(_local, "serial", False)
    _local.serial = before or bool(condition)
    try:
        yield
    finally:
        _local.serial = before


def _renamed(fn, suffix):
    """A copy of ``fn`` under another qualified name: Numba's on-disk cache
    is keyed by name and bytecode, not by compile options, so the serial
    build needs a name of its own."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__doc__ = fn.__doc__
    copy.__module__ = fn.__module__
    return copy


class Kernel:
    """A kernel compiled as a parallel and a serial build of one source;
    calling it launches the build the rules above allow."""

    def __init__(self, fn, **options):
        self.parallel = njit(parallel=True, **options)(fn)
        self.serial = njit(parallel=False, **options)(_renamed(fn, "__serial"))
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        if _pool_lost or getattr(_local, "serial", False):     # not parallel_allowed()
            return self.serial(*args)
        _launchers.add(threading.get_ident())
        if _current_layer() in _THREAD_SAFE_LAYERS:
            return self.parallel(*args)
        if not _launch_lock.acquire(blocking=False):
            return self.serial(*args)
        try:
            return self.parallel(*args)
        finally:
            _launch_lock.release()


def kernel(**options):
    """Decorator: ``@kernel(cache=True, ...)`` makes a :class:`Kernel`."""
    return lambda fn: Kernel(fn, **options)
