"""CUDA side of :class:`nbnorm.Moments`: states on the device.

A state is ``(count, mean, m2, mean_lo)``: int64 and float64 device
vectors (``mean + mean_lo``: the compensated mean, see :class:`nbnorm.Moments`).
``moment_state`` reduces ``x`` with the backend's Welford kernels and
finalizes in float64 (``m2 = M2``, i.e. ``inv_dof = 1``); the kernels below
split ``pivot + mean(x − pivot)`` into ``mean`` and ``mean_lo``, merge two
states elementwise with Chan's formula (the shared
``_welford.merge_states``; a side with count 0 is the identity) and read
variances ``m2/(count − ddof)`` (NaN where ``count − ddof ≤ 0``, flagged in
a one-element vector so the host can warn).  Compiled at first launch;
``kernels.kernel_signatures`` lists the signatures the backend launches them with.
"""
from __future__ import annotations

import math

from numba import cuda, float64, int64

from .. import _welford
from .device import TPB

merge_state = cuda.jit(device=True)(_welford.merge_states)
two_sum = cuda.jit(device=True)(_welford.two_sum)


@cuda.jit
def merge_states(count_a, mean_a, m2_a, lo_a, count_b, mean_b, m2_b, lo_b,
                 count, mean, m2, lo):
    """``(count, mean, m2, lo)[i]`` = the merge of states ``a`` and ``b`` at ``i``."""
    i = cuda.grid(1)
    if i >= count.size:
        return
    _, mu, mu_lo, s2 = merge_state(float64(count_a[i]), mean_a[i], lo_a[i], m2_a[i],
                                   float64(count_b[i]), mean_b[i], lo_b[i], m2_b[i])
    count[i] = count_a[i] + count_b[i]
    mean[i] = mu
    lo[i] = mu_lo
    m2[i] = s2


@cuda.jit
def count_partials(part_count, n_chunks, count, relative):
    """``count[s] = Σ_c part_count[c, s]`` (flat ``(n_chunks, n_stats)`` partial counts,
    exact integers in the accumulator type); ``relative[s] = NaN`` where
    the count is 0 (no value: the mean is NaN)."""
    s = cuda.grid(1)
    n_stats = count.size
    if s >= n_stats:
        return
    total = 0
    for c in range(n_chunks):
        total += int64(part_count[c * n_stats + s])
    count[s] = total
    if total == 0:
        relative[s] = math.nan


@cuda.jit
def split_mean(pivot, relative, mean, lo):
    """``mean + lo = pivot + relative`` exactly (``lo`` 0 where not finite)."""
    i = cuda.grid(1)
    if i >= mean.size:
        return
    hi, err = two_sum(pivot[i], relative[i])
    mean[i] = hi
    lo[i] = err if abs(hi) < math.inf else 0.0


@cuda.jit
def state_variance(count, m2, ddof, var, short):
    """``var = m2/(count − ddof)``; NaN and ``short[0] = 1`` where ``count − ddof ≤ 0``."""
    i = cuda.grid(1)
    if i >= var.size:
        return
    dof = count[i] - ddof
    if dof > 0:
        var[i] = m2[i] / dof
    else:
        var[i] = math.nan
        short[0] = 1


@cuda.jit
def sqrt_into(values, roots):
    i = cuda.grid(1)
    if i < roots.size:
        roots[i] = math.sqrt(values[i])


def launch(kernel, n, *args):
    """Launch an elementwise state kernel over ``n`` statistics."""
    kernel[max(1, -(-n // TPB)), TPB](*args)
