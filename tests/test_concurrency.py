"""Threads, fork, Dask's threaded scheduler and a distributed LocalCluster
(worker processes, each calling nbnorm from its threads) under every
threading layer.

Each case runs ``concurrency_job.py`` in a fresh interpreter with
``NUMBA_THREADING_LAYER`` set, under a timeout: a hang or an abort (GNU
OpenMP after fork, workqueue under concurrent launches) fails the test, and
the job itself checks that concurrent results are bitwise equal to serial ones.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("concurrency_job.py")
LAYERS = ["omp", "workqueue", "tbb"]


@functools.lru_cache
def layer_loads(layer):
    """Whether Numba can start ``layer`` here (tbb needs its package)."""
    code = ("import numba, numpy as np\n"
            "@numba.njit(parallel=True)\n"
            "def f(a):\n"
            "    for i in numba.prange(a.size): a[i] = i\n"
            "f(np.empty(4)); print(numba.threading_layer())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "NUMBA_THREADING_LAYER": layer})
    return run.returncode == 0 and run.stdout.split()[-1:] == [layer]


def run_job(case, layer, timeout=300):
    if not layer_loads(layer):
        pytest.skip(f"Numba cannot load the {layer} threading layer here "
                    f"(tbb needs `pip install tbb`)")
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer}
    try:
        run = subprocess.run([sys.executable, str(JOB), case], capture_output=True, text=True,
                             timeout=timeout, env=env, cwd=JOB.parent)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case} under {layer}: no result within {timeout} s (hang)")
    out = run.stdout.split()
    assert run.returncode == 0, (f"{case} under {layer}: exit {run.returncode}\n"
                                 f"{run.stdout}\n{run.stderr[-3000:]}")
    assert out[-2:] == [layer, "ok"], f"{case} under {layer}: {run.stdout}"


@pytest.mark.parametrize("layer", LAYERS)
def test_four_threads_mixed_shapes_match_serial_calls(layer):
    run_job("threads", layer)


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
@pytest.mark.parametrize("layer", LAYERS)
def test_fork_pool_after_calls_in_parent(layer):
    run_job("fork", layer)


@pytest.mark.parametrize("layer", LAYERS)
def test_dask_threaded_scheduler(layer):
    pytest.importorskip("dask.array")
    run_job("dask", layer)


@pytest.mark.parametrize("layer", LAYERS)
def test_dask_distributed_workers(layer):
    pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    run_job("distributed", layer)
