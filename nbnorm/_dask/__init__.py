"""Dask backend: lazy ``dask.array.Array`` in, lazy arrays out (see :mod:`.backend`)."""
