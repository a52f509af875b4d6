"""nbnorm on Dask arrays (threaded scheduler) beside the same call on the
NumPy array and beside Dask's own reductions.

``impl``: ``nbnorm-dask`` (nbnorm on a Dask array whose chunks are views of
the in-memory NumPy array, computed with ``scheduler="threads"``),
``nbnorm-numpy`` (nbnorm on that NumPy array) and, for the moments,
``dask`` (``x.mean(axis)`` and ``x.var(axis)`` computed together).  The
array is :mod:`.cases`' ``nchw`` float32 input (``small``: 392 KiB in 4
chunks; ``large``: 103 MB in 8 chunks of 12.8 MB), so ``asv run --quick``
stays short.  Skipped when dask is not installed.

Run as a script for the hand measurement of the documentation (docs/guide/dask.md)
(``python -m benchmarks.bench_dask [--repeat 5] [--no-distributed]``): a
(640, 128, 56, 56) float32 array (1.03 GB; ``--batch N`` for another N) in
64 MB chunks, axis (0, 2, 3):
moments and the training forward on the threaded scheduler against the
NumPy path and ``da.mean`` + ``da.var`` (the forward three ways: ``y``
persisted in chunks as ``x`` is held, stored into a preallocated NumPy
array with ``da.store``, and computed into a new one), then moments on a 2-process
``LocalCluster`` with the data persisted on the workers (time and bytes
sent between processes).  Prints every repeat, so the spread shows.
"""
from __future__ import annotations

import numpy as np

import nbnorm

from .cases import AXES, host_array, stat_dtype
from .skips import have, skip

IMPLS = ("nbnorm-dask", "nbnorm-numpy", "dask")
N_CHUNKS = {"small": 4, "large": 8}


def _dask_input(size):
    if not have("dask"):
        skip("dask is not installed")
    import dask.array as da
    x = host_array("nchw", "float32", size)
    n = x.shape[0] // N_CHUNKS[size]
    return x, da.from_array(x, chunks=(n,) + x.shape[1:])


class DaskMoments:
    params = [["small", "large"], list(IMPLS)]
    param_names = ["size", "impl"]

    def setup(self, size, impl):
        import dask
        self.dask = dask
        self.x, self.xd = _dask_input(size)
        self.axis = AXES["nchw"]
        self.time_moments(size, impl)

    def time_moments(self, size, impl):
        """``mean, var`` over (0, 2, 3), computed."""
        if impl == "nbnorm-numpy":
            nbnorm.moments(self.x, self.axis)
        elif impl == "nbnorm-dask":
            self.dask.compute(*nbnorm.moments(self.xd, self.axis), scheduler="threads")
        else:
            sd = stat_dtype(self.x.dtype)
            self.dask.compute(self.xd.mean(self.axis, dtype=sd), self.xd.var(self.axis, dtype=sd),
                              scheduler="threads")


class DaskForward:
    params = [["small", "large"], ["nbnorm-dask", "nbnorm-dask-persist", "nbnorm-numpy"]]
    param_names = ["size", "impl"]

    def setup(self, size, impl):
        import dask
        self.dask = dask
        self.x, self.xd = _dask_input(size)
        self.axis = AXES["nchw"]
        c = self.x.shape[1]
        self.w = np.full(c, 1.25, np.float32)
        self.b = np.full(c, 0.125, np.float32)
        self.time_forward(size, impl)

    def time_forward(self, size, impl):
        """``y, mean, invstd`` with weight and bias: computed into NumPy arrays
        (``nbnorm-dask``) or persisted as chunks (``nbnorm-dask-persist``)."""
        if impl == "nbnorm-numpy":
            nbnorm.batch_norm_forward(self.x, self.w, self.b, axis=self.axis)
        elif impl == "nbnorm-dask-persist":
            self.dask.persist(*nbnorm.batch_norm_forward(self.xd, self.w, self.b, axis=self.axis),
                              scheduler="threads")
        else:
            self.dask.compute(*nbnorm.batch_norm_forward(self.xd, self.w, self.b, axis=self.axis),
                              scheduler="threads")


# ------------------------------------------------------------------ by hand
def _times(fn, repeat):
    import time
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _show(label, ts, ref=None):
    ts = sorted(ts)
    ratio = f"  ({ts[0] / ref:.2f}x of NumPy)" if ref else ""
    print(f"{label:34s} best {ts[0]*1e3:8.1f} ms  median {ts[len(ts)//2]*1e3:8.1f} ms  "
          f"worst {ts[-1]*1e3:8.1f} ms{ratio}")
    return ts[0]


def manual(repeat=5, distributed=True, batch=640):
    import dask
    import dask.array as da
    import numba

    shape, axis = (batch, 128, 56, 56), (0, 2, 3)
    x = np.empty(shape, np.float32)
    from .cases import fill
    fill(x.reshape(-1), 0)
    per = (64 << 20) // (x[0].nbytes)
    xd = da.from_array(x, chunks=(per,) + shape[1:])
    print(f"x {shape} float32, {x.nbytes / 1e6:.0f} MB, chunks {xd.chunksize} "
          f"({xd.npartitions} chunks of {x[:per].nbytes / 2**20:.0f} MiB); repeat {repeat}; "
          f"numba threads {numba.get_num_threads()}")
    w, b = np.full(128, 1.25, np.float32), np.full(128, 0.125, np.float32)
    nbnorm.moments(x, axis)
    nbnorm.batch_norm_forward(x, w, b, axis=axis)
    with dask.config.set(scheduler="threads"):
        ref = _show("moments numpy", _times(lambda: nbnorm.moments(x, axis), repeat))
        _show("moments dask (nbnorm)", _times(
            lambda: dask.compute(*nbnorm.moments(xd, axis)), repeat), ref)
        _show("da.mean + da.var", _times(
            lambda: dask.compute(xd.mean(axis), xd.var(axis)), repeat), ref)
        ref = _show("forward numpy", _times(
            lambda: nbnorm.batch_norm_forward(x, w, b, axis=axis), repeat))
        _show("forward dask, persisted", _times(
            lambda: dask.persist(*nbnorm.batch_norm_forward(xd, w, b, axis=axis)), repeat), ref)
        y = np.empty_like(x)
        _show("forward dask, stored into y", _times(
            lambda: da.store(nbnorm.batch_norm_forward(xd, w, b, axis=axis)[0], y, lock=False),
            repeat), ref)
        _show("forward dask, computed", _times(
            lambda: dask.compute(*nbnorm.batch_norm_forward(xd, w, b, axis=axis)), repeat), ref)
        rm, rv = np.zeros(128), np.ones(128)
        _show("forward dask + running, persisted", _times(
            lambda: dask.persist(*nbnorm.batch_norm_forward(
                xd, w, b, axis=axis, running_mean=rm, running_var=rv)), repeat), ref)
    if not distributed:
        return
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        gen = da.random.default_rng(0).standard_normal(shape, chunks=(per,) + shape[1:],
                                                      dtype=np.float32)
        xp = client.persist(gen)
        from distributed import wait
        wait(xp)

        def sent():
            return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
                       .values())

        for label, build in (("moments dask (nbnorm)", lambda: nbnorm.moments(xp, axis)),
                             ("da.mean + da.var", lambda: (xp.mean(axis), xp.var(axis)))):
            client.compute(build(), sync=True)          # warm the workers (JIT cache loads)
            before = sent()
            ts = _times(lambda: client.compute(build(), sync=True), repeat)
            moved = (sent() - before) / repeat
            _show(f"2-process cluster: {label}", ts)
            print(f"{'':34s} {moved / 1e3:.1f} kB sent between workers per call "
                  f"(x is {x.nbytes / 1e6:.0f} MB)")


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-distributed", action="store_true")
    p.add_argument("--batch", type=int, default=640,
                   help="N of the (N, 128, 56, 56) float32 array (640: 1.03 GB)")
    a = p.parse_args()
    manual(a.repeat, not a.no_distributed, a.batch)
