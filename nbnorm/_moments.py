"""Mergeable Welford states: :class:`Moments`.

A state holds, per statistic, ``count`` (int64), ``mean`` and
``m2 = Σ(x − mean)²`` (float64).  Two states of the same statistic shape
merge exactly, in any order (Chan, Golub & LeVeque)::

    n  = nₐ + n_b,   δ = μ_b − μₐ
    μ  = μₐ + δ · n_b / n
    M2 = M2ₐ + M2_b + δ² · nₐ · n_b / n

so statistics of data that arrives in batches, or lives in chunks of a Dask
array, are those of the whole, without a second pass and without the
``E[x²] − E[x]²`` cancellation.  A statistic with ``count == 0`` has mean
NaN and ``m2`` 0; it is the identity of the merge.

Each mean is carried with its rounding error (``mean + mean_lo``, a
compensated float64): ``δ = μ_b − μₐ`` of two means near 10⁸ rounded to
float64 would be off by ~ulp(10⁸), which ``δ²·nₐn_b/n`` squares into M2;
with the compensation, merged states keep the precision of one pass.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import _router
from . import _validate as V
from ._layout import normalize_axis

__all__ = ["Moments"]


class Moments:
    """Per-statistic ``(count, mean, m2)`` of some data; immutable.

    Build one with :meth:`of` (one pass over an array) or :meth:`empty`
    (the identity), combine with :meth:`merge` or ``+``, read
    :meth:`var` / :meth:`std`.  The arrays are of the backend's array type
    (NumPy for host data); NumPy ones are read-only.

    Two states of the same statistic shape merge exactly, in any order
    (Chan, Golub & LeVeque), with ``δ = μ_b − μₐ``::

        n  = nₐ + n_b
        μ  = μₐ + δ · n_b / n
        M2 = M2ₐ + M2_b + δ² · nₐ · n_b / n

    so the statistics of data that arrives in batches, or lives in chunks,
    are those of the whole, without a second pass.  ``sum(states)`` works
    too.  States pickle (device arrays through host copies).

    Parameters
    ----------
    count : ndarray
        The number of values per statistic (int64), of the statistic shape.
    mean : ndarray
        The mean per statistic (NaN where ``count`` is 0), shaped as ``count``.
    m2 : ndarray
        ``Σ(x − mean)²`` per statistic (0 where ``count`` is 0), shaped as
        ``count``.
    mean_lo : ndarray
        The rounding error of ``mean`` (``mean + mean_lo`` is the
        compensated mean); zeros for a plain state.

    Raises
    ------
    ValueError
        If ``count``, ``mean`` and ``m2`` do not have one shape.

    See Also
    --------
    moments : Mean and variance of one array in one call.

    Notes
    -----
    The constructor takes the arrays as they are (NumPy ones are made
    read-only); states are usually built with :meth:`of` and :meth:`empty`.
    Setting an attribute raises ``AttributeError``: :meth:`merge` returns a
    new state.

    Examples
    --------
    Statistics of a batch that arrives in two parts:

    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0], [7.0, 2.0]])
    >>> first = nbnorm.Moments.of(x[:2], axis=0)
    >>> second = nbnorm.Moments.of(x[2:], axis=0)
    >>> both = first + second
    >>> both
    Moments(shape=(2,), backend='cpu')
    >>> both.count, both.mean, both.var()
    (array([4, 4]), array([4., 5.]), array([ 5., 11.]))
    >>> nbnorm.moments(x, axis=0)
    (array([4., 5.]), array([ 5., 11.]))

    A state from its fields:

    >>> state = nbnorm.Moments(np.array([2, 2]), np.array([1.0, 2.0]),
    ...                        np.array([2.0, 8.0]), np.zeros(2))
    >>> state.var()
    array([1., 4.])
    """

    __slots__ = ("_count", "_mean", "_m2", "_mean_lo", "_backend", "_like")

    def __init__(self, count, mean, m2, mean_lo, *, _backend=None, _like=None):
        backend = _backend or _router.load("cpu")
        if tuple(count.shape) != tuple(mean.shape) or tuple(mean.shape) != tuple(m2.shape):
            raise ValueError(f"Moments: count, mean and m2 must have one shape, got "
                             f"{tuple(count.shape)}, {tuple(mean.shape)}, {tuple(m2.shape)}")
        for a in (count, mean, m2, mean_lo):
            if isinstance(a, np.ndarray):
                a.flags.writeable = False
        for name, value in (("_backend", backend), ("_like", _like), ("_count", count),
                            ("_mean", mean), ("_m2", m2), ("_mean_lo", mean_lo)):
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------ builders
    @classmethod
    def of(cls, x, axis=None, *, skipna=False, by=None):
        """The state of ``x`` reduced over ``axis`` (``None``: all axes), in one
        pass; with ``skipna`` NaNs are left out (counts then differ per
        statistic, as ``np.nanmean``/``np.nanvar``).

        Parameters
        ----------
        x : array_like
            The data, of any shape: float16, float32 or float64 (integer and
            bool input is promoted to float64).  A NumPy array or anything
            ``np.asarray`` reads gives a host state, a CUDA array a device
            state, a Dask array one computed chunk by chunk.
        axis : int, tuple of int or None, optional
            The dimensions reduced over (negative ones count from the end);
            ``None``, the default, reduces over every axis.
        skipna : bool, optional
            If True, NaNs are left out of each statistic (default False).
        by : array_like of int, optional
            One integer label per index of the labelled axis (``axis``, or
            its first entry): states per group of equal labels, with a
            leading dimension of the sorted distinct non-negative labels
            (negative ones left out); they merge like any state, so a
            climatology can be built year by year.  NumPy, CUDA and Dask arrays.

        Returns
        -------
        Moments
            The state: ``count``, ``mean`` and ``m2`` of the statistic shape
            (``x.shape`` without the ``axis`` dimensions, after the group
            dimension with ``by``); mean and ``m2`` in float64.

        Raises
        ------
        TypeError
            If ``x`` is None, a masked array or of an unsupported dtype
            (complex, object, strings, datetimes), or if ``axis`` is not an
            int, a tuple of ints or None.
        ValueError
            If ``axis`` names a dimension twice, or ``by`` is not one
            integer label per index of the labelled axis.
        numpy.exceptions.AxisError
            If an entry of ``axis`` is out of range for ``x.ndim``.

        See Also
        --------
        Moments.merge : Combine with the state of more data.
        moments : Mean and variance in one call.

        Examples
        --------
        >>> x = np.array([[1.0, 2.0, 3.0], [5.0, 6.0, np.nan]])
        >>> state = nbnorm.Moments.of(x, axis=1, skipna=True)
        >>> state.shape
        (2,)
        >>> state.count, state.mean
        (array([3, 2]), array([2. , 5.5]))
        """
        if x is None:
            raise TypeError("Moments.of: x is required, got None")
        if by is not None:
            from . import _grouped
            return _grouped.moment_states(x, axis, skipna, by)
        backend, arrays = _router.dispatch(x=x)
        xa = arrays["x"]
        V.float_input(xa, "x", allow_int=True)
        ax = normalize_axis(axis, xa.ndim)
        if np.dtype(xa.dtype).kind in "iub":
            xa = backend.astype(xa, np.float64)
        count, mean, m2, mean_lo = backend.moment_state(xa, ax, bool(skipna))
        return cls(count, mean, m2, mean_lo, _backend=backend,
                   _like=x if backend.wrap_reads_like else None)

    @classmethod
    def empty(cls, shape, dtype=np.float64):
        """The identity of :meth:`merge`: ``count`` 0 everywhere (host arrays).

        Its ``mean`` is NaN and its ``m2`` 0; merged with any state of the
        same shape it gives that state's statistics.

        Parameters
        ----------
        shape : int or tuple of int
            The statistic shape.
        dtype : dtype, optional
            The float dtype of ``mean`` and ``m2`` (default float64).

        Returns
        -------
        Moments
            The empty state, NumPy arrays.

        Raises
        ------
        TypeError
            If ``dtype`` is not a float dtype.

        See Also
        --------
        Moments.of : The state of an array.

        Examples
        --------
        >>> empty = nbnorm.Moments.empty(2)
        >>> empty.count, empty.mean
        (array([0, 0]), array([nan, nan]))

        A running total over batches can start from it:

        >>> x = np.array([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
        >>> total = empty
        >>> for batch in np.split(x, 3, axis=1):
        ...     total = total + nbnorm.Moments.of(batch, axis=1)
        >>> total.mean, total.count
        (array([2., 6.]), array([3, 3]))
        """
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        dt = np.dtype(dtype)
        if dt.kind != "f":
            raise TypeError(f"Moments.empty: dtype must be a float dtype, got {dt}")
        return cls(np.zeros(shape, np.int64), np.full(shape, np.nan, dt), np.zeros(shape, dt),
                   np.zeros(shape, dt))

    # ------------------------------------------------------------ reading
    @property
    def count(self):
        """The number of values per statistic (int64, of the statistic shape).

        Examples
        --------
        >>> nbnorm.Moments.of(np.array([[1.0, 2.0], [3.0, np.nan]]), axis=0, skipna=True).count
        array([2, 1])
        """
        return self._wrap(self._count)

    @property
    def mean(self):
        """The mean per statistic (NaN where ``count`` is 0).

        Examples
        --------
        >>> nbnorm.Moments.of(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0).mean
        array([2., 4.])
        """
        return self._wrap(self._mean)

    @property
    def m2(self):
        """``Σ(x − mean)²`` per statistic (0 where ``count`` is 0).

        Examples
        --------
        >>> nbnorm.Moments.of(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0).m2
        array([2., 8.])
        """
        return self._wrap(self._m2)

    @property
    def shape(self):
        """The statistic shape.

        Examples
        --------
        >>> nbnorm.Moments.of(np.zeros((8, 3, 4)), axis=(0, 2)).shape
        (3,)
        """
        return tuple(self._mean.shape)

    @property
    def backend(self):
        """Name of the backend whose arrays the state holds (``"cpu"``, ``"cuda"``).

        Examples
        --------
        >>> nbnorm.Moments.of(np.ones(3)).backend
        'cpu'
        """
        return self._backend.name

    def _wrap(self, a):
        return a if self._like is None else self._backend.wrap(a, self._like)

    def var(self, ddof=0):
        """``m2 / (count − ddof)``; NaN (with a ``RuntimeWarning``) where
        ``count − ddof ≤ 0``.

        Parameters
        ----------
        ddof : float, optional
            Delta degrees of freedom (0, the default: the biased variance;
            1: the unbiased one).

        Returns
        -------
        ndarray
            The variance per statistic, of the statistic shape; float64 for
            host states.

        Raises
        ------
        TypeError
            If ``ddof`` is not a real number.

        Warns
        -----
        RuntimeWarning
            If ``count − ddof ≤ 0`` for some statistic; its variance is NaN.

        See Also
        --------
        Moments.std : The square root.

        Examples
        --------
        >>> state = nbnorm.Moments.of(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0)
        >>> state.var()
        array([1., 4.])
        >>> state.var(ddof=1)
        array([2., 8.])
        """
        ddof = V.ddof_value(ddof)
        var, short = self._backend.state_variance(self._count, self._m2, ddof)
        if short:
            warnings.warn("Moments.var: degrees of freedom <= 0 for some statistics; their "
                          "variance is NaN", RuntimeWarning, stacklevel=2)
        return self._wrap(var)

    def std(self, ddof=0):
        """``√var(ddof)`` (same NaN rule).

        Parameters
        ----------
        ddof : float, optional
            Delta degrees of freedom, as in :meth:`var` (default 0).

        Returns
        -------
        ndarray
            The standard deviation per statistic, of the statistic shape;
            float64 for host states.

        Raises
        ------
        TypeError
            If ``ddof`` is not a real number.

        Warns
        -----
        RuntimeWarning
            If ``count − ddof ≤ 0`` for some statistic; its standard
            deviation is NaN.

        See Also
        --------
        Moments.var : The variance.

        Examples
        --------
        >>> state = nbnorm.Moments.of(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0)
        >>> state.std()
        array([1., 2.])
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            var = self._backend.state_variance(self._count, self._m2, V.ddof_value(ddof))
        if var[1]:
            warnings.warn("Moments.std: degrees of freedom <= 0 for some statistics; their "
                          "standard deviation is NaN", RuntimeWarning, stacklevel=2)
        return self._wrap(self._backend.sqrt(var[0]))

    # ------------------------------------------------------------ merging
    def merge(self, other):
        """The state of both data sets (Chan's formula, exact in any order).

        ``a.merge(b)`` is also written ``a + b``; ``sum(states)`` merges a
        list of states.

        Parameters
        ----------
        other : Moments
            A state of the same statistic shape, on the same backend.

        Returns
        -------
        Moments
            A new state (neither operand changes).

        Raises
        ------
        TypeError
            If ``other`` is not a :class:`Moments`, or holds arrays of another
            backend (host and CUDA).
        ValueError
            If the statistic shapes differ.

        See Also
        --------
        Moments.of : The state of an array.
        Moments.empty : The identity of the merge.

        Examples
        --------
        >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0], [7.0, 2.0]])
        >>> a = nbnorm.Moments.of(x[:1], axis=0)
        >>> b = nbnorm.Moments.of(x[1:], axis=0)
        >>> merged = a.merge(b)
        >>> merged.mean, merged.var()
        (array([4., 5.]), array([ 5., 11.]))
        >>> sum([a, b]).count
        array([4, 4])
        """
        if not isinstance(other, Moments):
            raise TypeError(f"Moments.merge: other must be a Moments, got "
                            f"{type(other).__module__}.{type(other).__qualname__}")
        if other.backend != self.backend:
            raise TypeError(f"Moments.merge: self holds {self.backend} arrays but other holds "
                            f"{other.backend} arrays; move one state to the other's device")
        if other.shape != self.shape:
            raise ValueError(f"Moments.merge: statistic shapes differ: self {self.shape}, "
                             f"other {other.shape}")
        merged = self._backend.merge_states(self._fields(), other._fields())
        return Moments(*merged, _backend=self._backend,
                       _like=self._like if self._like is not None else other._like)

    __add__ = merge

    def _fields(self):
        return self._count, self._mean, self._m2, self._mean_lo

    def __radd__(self, other):
        """``sum(states)`` starts from 0."""
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    # ------------------------------------------------------------ the rest
    def __reduce__(self):
        """Pickled with host copies of device arrays (a backend's ``to_host``);
        unpickled onto the backend again (as its own device arrays)."""
        to_host = getattr(self._backend, "to_host", None)
        arrays = [to_host(a) if to_host else a for a in self._fields()]
        return (_rebuild, (*arrays, self._backend.name))

    def __setattr__(self, name, value):
        raise AttributeError("Moments is immutable; merge returns a new state")

    def __repr__(self):
        return f"Moments(shape={self.shape}, backend={self.backend!r})"


def _rebuild(count, mean, m2, mean_lo, backend):
    impl = _router.load(backend)
    from_host = getattr(impl, "from_host", None)
    arrays = (count, mean, m2, mean_lo)
    if from_host:
        arrays = tuple(from_host(a) for a in arrays)
    return Moments(*arrays, _backend=impl)
