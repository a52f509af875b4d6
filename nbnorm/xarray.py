"""nbnorm for xarray: statistics and standardized anomalies by dimension name.

``import nbnorm.xarray`` (``pip install "nbnorm[xarray]"``) gives
:func:`moments` and :func:`standardize` on ``DataArray`` and ``Dataset``
objects and registers the ``.nbnorm`` accessor on both::

    import nbnorm.xarray as nbx
    mean, var = nbx.moments(da, "time")
    z = nbx.standardize(da, "time")              # or da.nbnorm.standardize("time")

The data stay what they are: NumPy-backed objects are computed now (on the
CPU kernels), Dask-backed ones stay lazy (chunks along the reduced
dimensions allowed), CuPy-backed ones run on the GPU.  Results carry the
dimensions, coordinates and name xarray's own reductions give.
"""
from __future__ import annotations

import warnings
from collections.abc import Hashable
from contextlib import contextmanager

import numpy as np
import xarray as xr

import nbnorm

__all__ = ["moments", "standardize"]


def moments(obj, dim=None, *, by=None, ddof=0, skipna=None):
    """Mean and variance of a DataArray or of every data variable of a
    Dataset over the dimensions ``dim``, in one exact pass.

    ``var = Σ(x − mean)²/(n − ddof)``; as ``obj.mean(dim)`` and
    ``obj.var(dim, ddof=ddof)`` but reading the data once, with
    :func:`nbnorm.moments`' exactness (float32 data at 288 K: the float64
    statistics of the stored values to ~1e-7 relative).

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        The data; every data variable of a Dataset must have the dimensions
        ``dim``.
    dim : str, sequence of str or None, optional
        The dimensions reduced over; ``None``, the default, reduces over all.
        With ``by``, the first is the labelled one.
    by : str or xarray.DataArray, optional
        Statistics per group along the first of ``dim``, as
        ``obj.groupby(by).mean(dim)``: a DataArray along that dimension
        (``da.time.dt.month``) or the name of a coordinate or virtual
        variable (``"time.month"``).  The results then have a leading
        dimension named after ``by`` (``month``) with its sorted distinct
        values as coordinate; missing (NaN) labels are left out.
    ddof : float, optional
        Delta degrees of freedom of the variance (default 0).
    skipna : bool or None, optional
        Leave NaNs out of the statistics; ``None``, the default, means True
        for floating-point data (xarray's default) and False otherwise.

    Returns
    -------
    mean : xarray.DataArray or xarray.Dataset
        The means: ``obj``'s dimensions without ``dim``, with their
        coordinates, ``obj``'s name and its attributes where xarray's own
        reductions keep them (``xr.set_options(keep_attrs=…)``); float32 statistics for float16/float32 data,
        float64 otherwise.
    var : xarray.DataArray or xarray.Dataset
        The variances, shaped as ``mean``.

    Raises
    ------
    TypeError
        If ``obj`` is not a DataArray or Dataset, or a variable's dtype is
        not supported (see :func:`nbnorm.moments`).
    ValueError
        If a name in ``dim`` is not a dimension of ``obj`` (or of one of its
        data variables), or appears twice.

    See Also
    --------
    standardize : The z-scores over the same dimensions.
    nbnorm.moments : The same on arrays, by axis number.

    Examples
    --------
    >>> import xarray as xr, nbnorm.xarray as nbx
    >>> da = xr.DataArray([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]], dims=("y", "time"),
    ...                   coords={"y": [10, 20]}, name="t")
    >>> mean, var = nbx.moments(da, "time")
    >>> mean.dims, mean.values, mean.y.values
    (('y',), array([2., 6.]), array([10, 20]))
    """
    def one(da, axes):
        codes, group = _groups(obj, da, axes, by)
        with _quiet(skipna, da.dtype):
            res = nbnorm.moments(da.data, axes, ddof=ddof, skipna=_skipna(skipna, da.dtype),
                                 **({} if codes is None else {"by": codes}))
        return _reduced(da, axes, res, group)
    return _each(obj, dim, one, pair=True, by=by)


def standardize(obj, dim=None, *, by=None, ddof=0, eps=0.0, skipna=None):
    """Standardized anomalies ``z = (x − mean)/√(var + eps)`` of a DataArray
    or of every data variable of a Dataset, the statistics over ``dim``.

    As ``(obj − obj.mean(dim))/obj.std(dim, ddof=ddof)``, but in one exact
    pass for the statistics and one read + write for ``z``
    (:func:`nbnorm.standardize`).

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        The data; every data variable of a Dataset must have the dimensions
        ``dim``.
    dim : str, sequence of str or None, optional
        The dimensions the statistics are taken over; ``None``, the
        default, means all of them.  With ``by``, the first is the
        labelled one.
    by : str or xarray.DataArray, optional
        Standardize every element by the statistics of its own group along
        the first of ``dim`` (``"time.month"``: anomalies against the
        monthly climatology), as ``obj.groupby(by)`` does; see
        :func:`moments`.
    ddof : float, optional
        Delta degrees of freedom of the variance (default 0).
    eps : float, optional
        Added to the variance before the square root (default 0).
    skipna : bool or None, optional
        Leave NaNs out of the statistics (they stay NaN in ``z``); ``None``,
        the default, means True for floating-point data and False otherwise.

    Returns
    -------
    z : xarray.DataArray or xarray.Dataset
        ``obj``'s dimensions, coordinates, name and attributes, with the
        standardized values in each variable's dtype (float64 for integers).

    Raises
    ------
    TypeError
        If ``obj`` is not a DataArray or Dataset, or a variable's dtype is
        not supported (see :func:`nbnorm.standardize`).
    ValueError
        If a name in ``dim`` is not a dimension of ``obj`` (or of one of its
        data variables), appears twice, or ``eps`` is negative.

    See Also
    --------
    moments : The statistics alone.
    nbnorm.standardize : The same on arrays, by axis number.

    Examples
    --------
    >>> import xarray as xr, nbnorm.xarray as nbx
    >>> da = xr.DataArray([[1.0, 2.0, 3.0], [5.0, 6.0, 9.0]], dims=("y", "time"),
    ...                   attrs={"units": "K"})
    >>> z = nbx.standardize(da, "time")
    >>> z.dims, z.attrs
    (('y', 'time'), {'units': 'K'})
    >>> np.round(z.values, 4)
    array([[-1.2247,  0.    ,  1.2247],
           [-0.9806, -0.3922,  1.3728]])
    """
    def one(da, axes):
        codes, _ = _groups(obj, da, axes, by)
        with _quiet(skipna, da.dtype):
            z = nbnorm.standardize(da.data, axes, ddof=ddof, eps=eps,
                                   skipna=_skipna(skipna, da.dtype),
                                   **({} if codes is None else {"by": codes}))
        return da.copy(data=z)
    return _each(obj, dim, one, pair=False, reduce=False, by=by)


# ------------------------------------------------------------------ helpers
def _skipna(skipna, dtype):
    return np.dtype(dtype).kind == "f" if skipna is None else bool(skipna)


@contextmanager
def _quiet(skipna, dtype):
    """With NaNs skipped, a statistic with no values (a land pixel of an ocean
    field) is NaN without a warning, as in xarray's own reductions."""
    with warnings.catch_warnings():
        if _skipna(skipna, dtype):
            # (on Dask-backed objects the graph carries the decision, see
            # nbnorm._dask.backend.state_variance)
            warnings.filterwarnings("ignore", "(nbnorm|moments|Moments.var): [Dd]egrees of "
                                    "freedom", RuntimeWarning)
        yield


def _keeps_attrs():
    """Whether xarray's own reductions keep attributes now (its default has
    changed between versions; ``xr.set_options(keep_attrs=…)`` decides)."""
    return bool(xr.DataArray([0.0], attrs={"k": 1}).mean().attrs)


def _dims(obj, dim):
    if dim is None:
        return tuple(obj.dims)
    dims = (dim,) if isinstance(dim, Hashable) and not isinstance(dim, tuple) else tuple(dim)
    if len(set(dims)) != len(dims):
        raise ValueError(f"dim: {dim!r} names a dimension twice")
    missing = [d for d in dims if d not in obj.dims]
    if missing:
        raise ValueError(f"dim: {missing[0]!r} is not a dimension of the data (its dimensions "
                         f"are {tuple(obj.dims)})")
    return dims


def _groups(obj, da, axes, by):
    """``(codes, group coordinate)``: ``by`` as one integer code per index of
    the labelled dimension (−1 where the label is missing) and the sorted
    distinct labels as a DataArray named after ``by``; ``(None, None)``
    without ``by``."""
    if by is None:
        return None, None
    first = da.dims[axes[0]]
    if isinstance(by, str):
        try:
            by = obj[by]
        except KeyError:
            raise ValueError(f"by: {by!r} is not a coordinate or variable of the data") from None
    if not isinstance(by, xr.DataArray):
        raise TypeError(f"by: expected a DataArray or the name of a coordinate, got "
                        f"{type(by).__name__}")
    if by.dims != (first,):
        raise ValueError(f"by: expected labels along {first!r} (the first of dim), got "
                         f"dimensions {by.dims}")
    values = by.values
    missing = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    labels, codes = np.unique(values[~missing], return_inverse=True)
    full = np.full(values.shape, -1, np.int64)
    full[~missing] = codes
    name = by.name if by.name is not None else "group"
    return full, xr.DataArray(labels, dims=(name,), name=name)


def _reduced(da, axes, results, group=None):
    """``results`` (statistic-shaped arrays, after a group dimension with
    ``group``) as DataArrays of ``da`` without the dimensions of ``axes``:
    their coordinates, ``da``'s name, attrs as xarray keeps them."""
    template = da.isel({da.dims[a]: 0 for a in axes}, drop=True)
    if group is not None:
        template = template.expand_dims({group.name: group.values})
    out = []
    for r in results:
        o = template.copy(data=r)
        if not _keeps_attrs():
            o.attrs = {}
        out.append(o)
    return tuple(out)


def _each(obj, dim, fn, pair, reduce=True, by=None):
    """``fn(data_array, axes)`` on a DataArray, or on every data variable of a
    Dataset (assembled back into one, or two for ``pair`` results)."""
    if isinstance(obj, xr.DataArray):
        return fn(obj, tuple(obj.get_axis_num(d) for d in _dims(obj, dim)))
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"obj: expected an xarray DataArray or Dataset, got "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    dims = _dims(obj, dim)
    results = {}
    for name, var in obj.data_vars.items():
        lacking = [d for d in dims if d not in var.dims]
        if lacking:
            raise ValueError(f"dim: data variable {name!r} has no dimension {lacking[0]!r} "
                             f"(its dimensions are {tuple(var.dims)})")
        results[name] = fn(var, tuple(var.get_axis_num(d) for d in dims))
    if not reduce:
        out = obj.copy()
        for name, r in results.items():
            out[name] = r
        return out
    template = obj.isel({d: 0 for d in dims}, drop=True)
    if not _keeps_attrs():
        template.attrs = {}
    outs = []
    for i in range(2 if pair else 1):
        ds = template.copy()
        for name, r in results.items():
            ds[name] = r[i] if pair else r
        outs.append(ds)
    return tuple(outs) if pair else outs[0]


# ------------------------------------------------------------------ accessor
class NbnormAccessor:
    """``obj.nbnorm``: :func:`moments` and :func:`standardize` of a DataArray
    or Dataset by dimension name (registered by ``import nbnorm.xarray``)."""

    def __init__(self, obj):
        self._obj = obj

    def moments(self, dim=None, **kwargs):
        """:func:`nbnorm.xarray.moments` of this object."""
        return moments(self._obj, dim, **kwargs)

    def standardize(self, dim=None, **kwargs):
        """:func:`nbnorm.xarray.standardize` of this object."""
        return standardize(self._obj, dim, **kwargs)


xr.register_dataarray_accessor("nbnorm")(NbnormAccessor)
xr.register_dataset_accessor("nbnorm")(NbnormAccessor)
