"""Timing helpers of the suite: the best of several calls, calls alternating
between functions, and the copy bandwidth, the reference of
``Bandwidth.track_copy_fraction`` (:mod:`nbnorm._bandwidth`, the one
definition, also behind ``python -m nbnorm``'s "of copy" column)."""
from __future__ import annotations

import time

from nbnorm import _bandwidth

COPY_BYTES = 128 << 20     # size of each array of the copy-bandwidth reference


def best_time(fn, repeat=5):
    """Smallest wall time of ``repeat`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def alternating(fns, rounds, settle=0.0):
    """Wall times (seconds) of ``rounds`` rounds in which each of ``fns`` is
    called once, in turn — so the drifts of a shared machine hit all alike:
    one list per function, in the order of ``fns``.  With ``settle`` > 0 each
    timed call follows untimed calls of the same function lasting at least
    ``settle`` seconds (at least one): what the previous function left
    running — PyTorch's OpenMP workers spin for milliseconds after its last
    call — is then not charged to the next (see ``benchmarks/sweep.py``)."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for t, fn in zip(times, fns):
            if settle > 0:
                turn = time.perf_counter()
                fn()
                while time.perf_counter() - turn < settle:
                    fn()
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return times


_COPY_GBPS = {}


def copy_bandwidth(backend):
    """The machine's copy bandwidth on ``backend`` in GB/s (10⁹ B/s), measured
    once per process: :func:`nbnorm._bandwidth.copy_bandwidth` of two
    ``COPY_BYTES`` (128 MiB) arrays — the best of 9 copies on Numba's threads
    (CUDA: device to device), counted as 2 × 128 MiB (read + write)."""
    if backend not in _COPY_GBPS:
        _COPY_GBPS[backend] = _bandwidth.copy_bandwidth(COPY_BYTES, backend) / 1e9
    return _COPY_GBPS[backend]
