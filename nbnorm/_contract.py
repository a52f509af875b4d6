"""The backend contract: what a backend module registered with
:func:`nbnorm._router.register` provides, as code.

``Backend`` lists the attributes every backend has (checked for each
registered module by ``tests/test_contract.py``, names and parameters);
``NormFamily``, ``LazyForward``, ``Prepared``/``PreparedFamily`` and
``ChunkBackward`` are the optional parts, used where present (a backend
without them raises ``NotImplementedError`` for the family's functions /
computes the running statistics from its lazy results / validates every
call in full / cannot be the chunk type of a Dask backward).

Arrays: "array" is the backend's own type (NumPy, a device array, a Dask
array); statistics are flat or statistic-shaped as each method says; shapes
follow :mod:`nbnorm._api` (a statistic is ``x.shape`` without ``axis``).
"""
from __future__ import annotations

import types
from typing import Any, Protocol, runtime_checkable

Array = Any


@runtime_checkable
class Backend(Protocol):
    name: str
    #: a call's validity, plan and kernels follow from its signature alone (no
    #: device, stream or task graph in play), so the API may keep its prepared
    #: call per signature (:mod:`nbnorm._calls`)
    remembers_calls: bool
    #: ``wrap(result, like)`` reads ``like`` (the caller's array decides the
    #: result's type), so a :class:`nbnorm.Moments` state keeps it
    wrap_reads_like: bool
    #: the import name of the module whose ``stack`` and ``zeros`` work on
    #: this backend's arrays, with ``sqrt``, ``concatenate`` and ``full_like``
    #: ("numpy", "dask.array") or, where the arrays do no arithmetic,
    #: ``to_host``, ``from_host`` and ``output_like``
    #: ("nbnorm._cuda.array_module"): for grouped statistics (``by=``)
    array_module: str

    # -- arrays in and out
    def asarray(self, obj, argname: str) -> Array:
        """An argument that is read, as this backend's array (no copy where possible)."""

    def target(self, obj, argname: str) -> Array:
        """An argument written in place (``out``, running statistics), unconverted."""

    def wrap(self, result: Array, like) -> Any:
        """``result`` as the caller's array type (that of ``like``)."""

    def astype(self, a: Array, dtype) -> Array: ...

    def stat_dtype(self, dtype):
        """float64 for float64 data, float32 otherwise."""

    # -- batch norm and moments
    def moments(self, x: Array, axis: tuple, ddof: int) -> tuple[Array, Array]:
        """``(mean, var)``, ``var = M2/(n − ddof)``, statistic-shaped."""

    def forward(self, x, weight, bias, axis, eps, out) -> tuple[Array, Array, Array, Array]:
        """Training forward: ``(y, mean, biased var, invstd)``."""

    def inference(self, x, mean, var, weight, bias, axis, eps, out) -> Array:
        """``y = (x − mean)/√(var + eps)·weight + bias``."""

    def backward(self, dy, x, mean, invstd, weight, axis, training, out
                 ) -> tuple[Array, Array, Array]:
        """``(dx, dweight, dbias)``."""

    def update_running(self, running, batch, momentum, scale) -> int:
        """``running ← (1 − momentum)·running + momentum·scale·batch`` in place
        where ``batch`` is finite; returns how many entries were skipped."""

    # -- Moments states: (count int64, mean, m2, mean_lo) float64
    def moment_state(self, x, axis, skipna) -> tuple[Array, Array, Array, Array]: ...

    def merge_states(self, a: tuple, b: tuple) -> tuple[Array, Array, Array, Array]: ...

    def state_variance(self, count, m2, ddof) -> tuple[Array, bool]:
        """``(m2/(count − ddof), whether some count − ddof ≤ 0)``."""

    def sqrt(self, a: Array) -> Array: ...


@runtime_checkable
class ChunkBackward(Protocol):
    """The backward as its two passes, for backends whose arrays are the
    chunks of a Dask array: Dask adds each chunk's sums over the chunks of
    a statistic, then every chunk's ``dx`` comes from the totals."""

    def backward_sums(self, dy, x, mean, axis) -> tuple[Any, Any]:
        """The backward's reduction alone, ``(Σdy, Σdy·(x − mean))`` per
        statistic as host float64 arrays (Dask adds them over the chunks)."""

    def backward_apply(self, dy, x, mean, invstd, weight, s1, s2, n, axis, training) -> Array:
        """The backward's elementwise pass alone: ``dx`` from the sums over all
        ``n`` values of each statistic (``n`` a number or per-statistic counts)."""


@runtime_checkable
class NormFamily(Protocol):
    """Layer, group, instance and RMS norm on a :class:`nbnorm._geometry.Geometry`."""

    def norm_forward(self, x, geo, weight, bias, eps, rms, out
                     ) -> tuple[Array, Array, Array, Array]:
        """``(y, c, var, invstd)``: ``c`` the mean (0 for RMS), ``var`` the
        biased variance (mean(x²) for RMS)."""

    def norm_backward(self, dy, x, centre, invstd, geo, weight, rms, out
                      ) -> tuple[Array, Array, Array]:
        """``(dx, dweight, dbias)`` of the geometry's parameter shape."""


@runtime_checkable
class Prepared(Protocol):
    """Prepare once, execute many: ``prepare_<op>(…)`` takes the arguments of
    ``<op>`` (arrays as examples of their signature) and returns
    ``run(<op>'s arrays)`` doing only the per-call work (see
    :mod:`nbnorm._calls`); ``run`` holds no array and may run on several
    threads at once.  A backend without it runs ``<op>`` on every call."""

    def prepare_moments(self, x, axis, ddof): ...

    def prepare_forward(self, x, weight, bias, axis, eps, out): ...

    def prepare_inference(self, x, mean, var, weight, bias, axis, eps, out): ...

    def prepare_backward(self, dy, x, mean, invstd, weight, axis, training, out): ...


@runtime_checkable
class PreparedFamily(Protocol):
    """:class:`Prepared` for :class:`NormFamily`'s operations."""

    def prepare_norm_forward(self, x, geo, weight, bias, eps, rms, out): ...

    def prepare_norm_backward(self, dy, x, centre, invstd, geo, weight, rms, out): ...


@runtime_checkable
class LazyForward(Protocol):
    """A lazy backend computes the statistics once, at call time, when the
    running statistics must be updated (see :mod:`nbnorm._dask.backend`)."""

    def forward_with_running(self, x, weight, bias, axis, eps, out): ...


_IMPLEMENTS = {}


def implements(backend, protocol):
    """``isinstance(backend, protocol)``, decided once per backend module
    (a runtime-checkable Protocol's check walks its attributes: ~15 µs);
    other objects are checked every time."""
    if not isinstance(backend, types.ModuleType):
        return isinstance(backend, protocol)
    key = (backend.__name__, protocol)
    known = _IMPLEMENTS.get(key)
    if known is None:
        known = _IMPLEMENTS[key] = isinstance(backend, protocol)
    return known
