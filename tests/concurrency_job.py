"""Jobs run in a subprocess by ``test_concurrency.py`` (a hang or an abort
then fails one test instead of the run).

``python concurrency_job.py CASE`` prints the threading layer Numba used and
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


if __name__ == "__main__":
    ok = {"threads": threads, "fork": fork, "dask": dask_threads}[sys.argv[1]]()
    print(numba.threading_layer())
    print("ok" if ok else "MISMATCH")
