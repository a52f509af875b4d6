"""Pick the backend of a call from the types of its array arguments.

- NumPy arrays and other host array-likes (lists, scalars) → ``cpu``;
- objects exposing ``__cuda_array_interface__`` (Numba device arrays, CuPy,
  PyTorch CUDA tensors) and the CUDA simulator's device arrays → ``cuda``.

Backends register a *claim* (a predicate on one argument) and a loader that
imports the backend module on first use, so ``import nbnorm`` never imports
``numba.cuda``.  What a backend module provides is the contract in
:mod:`nbnorm._contract` (``Backend``, and optionally ``NormFamily`` and
``LazyForward``; ``to_host``/``from_host`` for pickling states), checked for
every registered backend by ``tests/test_contract.py``.  A new backend is
one more :func:`register` call; the API functions do not change.

Mixing: all array arguments of a call normally belong to one backend.  A
backend may declare (``accepts``) other backends whose arrays it takes
alongside its own: ``dask`` accepts ``cpu`` arrays (NumPy weights, running
statistics written in place), so a call with a Dask ``x`` and NumPy
``weight`` runs on the Dask backend.  Any other mix (host with CUDA, Dask
with CUDA) raises ``TypeError``.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class _Entry:
    name: str
    claims: Callable[[object], bool]
    module: str
    accepts: tuple = ()     # names of backends whose arrays it takes besides its own


_REGISTRY: list[_Entry] = []
_LOADED = {}    # name → its module, once imported
_HOST = "cpu"


def register(name, claims, module, accepts=()):
    """Register backend ``name``: ``claims(obj)`` says an argument belongs to
    it; ``module`` is the dotted path of its implementation (imported lazily);
    ``accepts`` names the backends whose arrays may be mixed into its calls."""
    _REGISTRY.insert(0, _Entry(name, claims, module, tuple(accepts)))
    _LOADED.pop(name, None)


def is_cuda_array(obj):
    """True for ``__cuda_array_interface__`` objects and simulator device arrays."""
    t = type(obj)
    if t.__module__.split(".")[0] == "torch" and hasattr(obj, "device"):
        # a CUDA tensor that requires grad refuses the interface; it is read via .detach()
        return getattr(obj.device, "type", None) == "cuda"
    if hasattr(t, "__cuda_array_interface__"):
        try:  # PyTorch CPU tensors define the attribute but raise on access
            obj.__cuda_array_interface__
        except (AttributeError, RuntimeError, TypeError, ValueError):
            return False
        return True
    return t.__module__.startswith("numba.cuda.simulator") and hasattr(obj, "copy_to_host")


def is_dask_array(obj):
    """True for ``dask.array.Array`` (without importing dask)."""
    core = sys.modules.get("dask.array.core")
    return core is not None and isinstance(obj, core.Array)


register(_HOST, lambda obj: True, "nbnorm._cpu.backend")
register("cuda", is_cuda_array, "nbnorm._cuda.backend")
register("dask", is_dask_array, "nbnorm._dask.backend", accepts=(_HOST,))


def _claim(obj):
    for entry in _REGISTRY:
        if entry.claims(obj):
            return entry
    raise AssertionError("the host backend claims everything")  # pragma: no cover


def _describe(obj):
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def load(name):
    """The backend module registered as ``name``."""
    module = _LOADED.get(name)
    if module is not None:
        return module
    for entry in _REGISTRY:
        if entry.name == name:
            return _LOADED.setdefault(name, importlib.import_module(entry.module))
    raise KeyError(name)


def backend_of(obj):
    """The backend module that owns ``obj`` (e.g. of one chunk of a Dask array)."""
    return load(_claim(obj).name)


def dispatch(outputs=(), **arrays):
    """``(backend, converted)`` for the named array arguments of one call.

    ``None`` values are passed through.  All other arguments must belong to
    one backend, or to backends that the owner ``accepts`` (the owner is the
    backend that accepts all the others); any other mix (host and device
    arrays) raises ``TypeError``.  The arguments named in ``outputs`` are
    written in place: the backend's ``target`` checks that they are arrays it
    can write (no conversion).
    """
    owner = None
    owner_arg = None
    seen = []
    for argname, obj in arrays.items():
        if obj is None:
            continue
        entry = _claim(obj)
        if entry not in seen:
            seen.append(entry)
        if owner is None:
            owner, owner_arg = entry, argname
        elif entry is owner or entry.name in owner.accepts:
            continue
        elif all(e is entry or e.name in entry.accepts for e in seen):
            owner, owner_arg = entry, argname      # e.g. a Dask weight after a NumPy x
        else:
            raise TypeError(
                f"{argname} is a {entry.name} array ({_describe(obj)}) but {owner_arg} is a "
                f"{owner.name} array ({_describe(arrays[owner_arg])}): pass every array "
                f"argument on the same device"
            )
    backend = load((owner or _claim(0)).name)
    converted = {k: (None if v is None else (backend.target if k in outputs else backend.asarray)(v, k))
                 for k, v in arrays.items()}
    return backend, converted
