"""Jobs run in a subprocess by ``test_concurrency.py`` (a hang or an abort
then fails one test instead of the run).

``python concurrency_job.py CASE`` (threads, fork, dask, distributed) prints the threading layer Numba used and
``ok`` when every result of the concurrent calls is bitwise equal to the
same call made serially on the main thread first.
"""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

import nbnorm

# (shape, axis): small ones run serially, the others in parallel
CASES = [((4, 3, 5, 5), (0, 2, 3)), ((8, 16, 40, 40), (0, 2, 3)), ((3000, 7), 0),
         ((2, 5), 1), ((60000, 3), 0), ((5, 40000), 1)]
BIG = np.random.default_rng(1).standard_normal((16, 8, 64, 64)).astype(np.float32)


def call(i):
    """Every public function on case ``i % len(CASES)``; the results' bytes."""
    shape, axis = CASES[i % len(CASES)]
    dtype = (np.float32, np.float64, np.float16)[i % 3]
    x = (np.random.default_rng(i).standard_normal(shape) * 2 + i).astype(dtype)
    dy = np.random.default_rng(i + 1).standard_normal(shape).astype(dtype)
    mean, var = nbnorm.moments(x, axis)
    rm, rv = np.zeros(mean.shape), np.ones(mean.shape)
    y, bmean, invstd = nbnorm.batch_norm_forward(x, axis=axis, running_mean=rm, running_var=rv)
    grads = nbnorm.batch_norm_backward(dy, x, bmean, invstd, axis=axis)
    inf = nbnorm.batch_norm_inference(x, mean, var, axis=axis)
    return b"".join(np.ascontiguousarray(a).tobytes()
                    for a in (mean, var, y, bmean, invstd, rm, rv, *grads, inf))


def block_forward(block):
    return nbnorm.batch_norm_forward(block, axis=(0, 2, 3))[0]


def threads(n_calls=400):
    serial = [call(i) for i in range(n_calls)]
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(call, range(n_calls))) == serial


def fork():
    nbnorm.batch_norm_forward(BIG, axis=(0, 2, 3))   # starts the parent's thread pool
    serial = [call(i) for i in range(12)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(call, range(12)) == serial


def dask_threads():
    import dask.array as da

    chunks = (4, 8, 64, 64)
    lazy = da.from_array(BIG, chunks=chunks).map_blocks(block_forward, dtype=BIG.dtype)
    got = lazy.compute(scheduler="threads", num_workers=4)
    want = np.concatenate([block_forward(BIG[i:i + 4]) for i in range(0, 16, 4)])
    return got.tobytes() == want.tobytes()


def dask_distributed():
    """Two worker processes of two threads each: nbnorm called from the workers'
    threads (plain calls and the Dask backend's chunk tasks), bitwise equal to
    the same calls made serially here."""
    import subprocess

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    # Fill Numba's on-disk cache in another process first, so that this process
    # and the workers all run cache-loaded kernels: a kernel compiled in-process
    # and the same kernel loaded from the cache were seen to differ in the last
    # bits (float64 moments of case 1 under omp), which is not what this tests.
    subprocess.run([sys.executable, __file__, "warm"], check=True)
    serial = [call(i) for i in range(48)]
    xd = da.from_array(BIG, chunks=(4, 4, 32, 64))
    graph = (*nbnorm.moments(xd, (0, 2, 3)), *nbnorm.batch_norm_forward(xd, axis=(0, 2, 3)))
    want = dask.compute(*graph, scheduler="sync")
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        got = client.gather(client.map(call, range(48)))
        lazy = dask.compute(*graph, scheduler=client)
    calls_ok = got == serial
    lazy_ok = [a.tobytes() == b.tobytes() for a, b in zip(lazy, want)]
    if not calls_ok or not all(lazy_ok):
        print("mismatch: calls", [i for i in range(48) if got[i] != serial[i]], "lazy", lazy_ok)
    return calls_ok and all(lazy_ok)


def warm():
    """Compile (or load) every kernel the distributed case uses; writes the cache."""
    import dask
    import dask.array as da
    for i in range(18):
        call(i)
    xd = da.from_array(BIG, chunks=(4, 4, 32, 64))
    dask.compute(*nbnorm.moments(xd, (0, 2, 3)), *nbnorm.batch_norm_forward(xd, axis=(0, 2, 3)),
                 scheduler="sync")
    return True


if __name__ == "__main__":
    ok = {"warm": warm, "threads": threads, "fork": fork, "dask": dask_threads,
          "distributed": dask_distributed}[sys.argv[1]]()
    print(numba.threading_layer())
    print("ok" if ok else "MISMATCH")
