"""Results do not depend on the number of threads, nor on whether the
parallel or the serial build of the kernels runs: bitwise identical."""
from __future__ import annotations

import numba
import numpy as np
import pytest

import nbnorm
from nbnorm._cpu import _threads

from helpers import FLOATS, channels_last, normal

CASES = [((4, 3, 128, 130), (0, 2, 3)),     # chunked reduction (few channels)
         ((2, 80, 16, 16), (0, 2, 3)),      # fused, one statistic per item
         ((70000, 5), 0),                   # kept innermost dim, chunked rows
         ((300001,), 0)]                    # one statistic, many chunks


def run_all(x, axis):
    stats = nbnorm.moments(x, axis)
    y, mean, invstd = nbnorm.batch_norm_forward(x, axis=axis)
    dy = np.ascontiguousarray(x[::-1]) if x.ndim > 0 else x
    grads = nbnorm.batch_norm_backward(dy, x, mean, invstd, axis=axis)
    frozen = nbnorm.batch_norm_backward(dy, x, mean, invstd, axis=axis, training=False)
    inf = nbnorm.batch_norm_inference(x, mean, invstd, axis=axis)
    return [*stats, y, mean, invstd, *grads, *frozen, inf, *run_family(x, dy)]


def run_family(x, dy):
    """Layer and RMS norm over the last axis; group and instance norm of
    ≥ 2-D inputs (channels at axis 1)."""
    out = []
    y, mean, inv = nbnorm.layer_norm(x)
    out += [y, mean, inv, *nbnorm.layer_norm_backward(dy, x, mean, inv)]
    y, rstd = nbnorm.rms_norm(x)
    out += [y, rstd, *nbnorm.rms_norm_backward(dy, x, rstd)]
    if x.ndim >= 2:
        c = x.shape[1]
        groups = max(g for g in (1, 2, 4, 8) if c % g == 0)
        y, mean, inv = nbnorm.group_norm(x, groups)
        out += [y, mean, inv, *nbnorm.group_norm_backward(dy, x, mean, inv, groups)]
        y, mean, inv = nbnorm.instance_norm(x)
        out += [y, mean, inv, *nbnorm.instance_norm_backward(dy, x, mean, inv)]
    return out


@pytest.fixture
def restore_threads():
    n = numba.get_num_threads()
    yield
    numba.set_num_threads(n)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
@pytest.mark.parametrize("dtype", FLOATS)
def test_one_and_two_threads_are_bitwise_identical(dtype, restore_threads):
    for shape, axis in CASES:
        x = normal(shape, dtype, seed=70, loc=5.0)
        views = [x, channels_last(x)] if x.ndim == 4 else [x]
        for xv in views:
            numba.set_num_threads(1)
            one = run_all(xv, axis)
            numba.set_num_threads(2)
            two = run_all(xv, axis)
            assert_bitwise_equal(one, two)


def assert_bitwise_equal(one, two):
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8),
                                      np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("dtype", FLOATS)
def test_serial_build_is_bitwise_identical_to_parallel_build(dtype):
    for shape, axis in CASES:
        x = normal(shape, dtype, seed=71, loc=-3.0)
        views = [x, channels_last(x)] if x.ndim == 4 else [x]
        for xv in views:
            with _threads.serial_if(True):
                serial = run_all(xv, axis)
            assert_bitwise_equal(serial, run_all(xv, axis))


def test_serial_if_is_per_thread_and_restores():
    import threading

    seen = {}
    with _threads.serial_if(True):
        t = threading.Thread(target=lambda: seen.setdefault("other", _threads.parallel_allowed()))
        t.start()
        t.join()
        seen["inside"] = _threads.parallel_allowed()
    assert seen == {"other": True, "inside": False}
    assert _threads.parallel_allowed()
