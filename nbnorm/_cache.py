"""Numba's on-disk cache, safe for processes that share it.

Numba keeps one index file per compiled function (signature → data file),
and ``IndexDataCacheFile.save`` rewrites it whole: it reads the index, takes
the first data-file number the index does not use, writes the index, then
the data.  Two processes that save builds of one function at the same time
can therefore drop each other's entries (the next process compiles again),
or give two signatures the same data file, so that a later process loads one
build's machine code for another's argument types (numba/numba#10128 reports
crashes from a race of this kind).  Job arrays, Dask workers, test runners
and container builds share caches, so nbnorm holds an exclusive ``flock`` on
one file per cache directory (``nbnorm-cache.lock``) around each save to the
directories of its own kernels.  Loading needs no lock: Numba writes each
file under a temporary name and renames it into place.  Where ``fcntl`` is
missing (Windows) or the lock file cannot be opened, saves go unlocked, as
in Numba.
"""
from __future__ import annotations

import os

from numba.core import caching

try:
    import fcntl
except ImportError:                                       # pragma: no cover (Windows)
    fcntl = None

LOCK_NAME = "nbnorm-cache.lock"

#: the cache directories whose saves are locked
DIRECTORIES: set[str] = set()

_save = caching.IndexDataCacheFile.save


def _locked_save(self, key, data):
    if fcntl is None or self._cache_path not in DIRECTORIES:
        return _save(self, key, data)
    try:
        fd = os.open(os.path.join(self._cache_path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return _save(self, key, data)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _save(self, key, data)
    finally:
        os.close(fd)                                      # releases the lock


def lock_saves(dispatcher):
    """Lock every save to the cache directory of ``dispatcher`` (a Numba
    dispatcher with ``cache=True``: every function whose source file lies in
    the same directory shares it); returns ``dispatcher``."""
    path = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
    if path is not None:
        DIRECTORIES.add(path)
        caching.IndexDataCacheFile.save = _locked_save
    return dispatcher
