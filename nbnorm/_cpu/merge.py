"""Merging of chunk partials (Chan for moments, plain sums for the
backward) and of two Moments states; the moments' final values."""
from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import (_pjit, _strict, backward_coefficients, chan_merge, forward_scale, invstd_of,
                   merge_state, two_sum)


# ------------------------------------------------------- chunk merging
@_pjit
def merge_moments(part_count, part_mean, part_m2, n, chunk, mean_out, m2_out):
    """Fold chunk partials in order: ``(mean, M2)`` per statistic (float64).
    A chunk counts ``part_count[c, stat]`` values, or (``part_count`` None)
    all of its ``min(n, (c + 1)·chunk) − c·chunk``; one with none is the
    identity of the merge."""
    n_chunks, n_stats = part_mean.shape
    for i_ in prange(n_stats):
        s = np.int64(i_)
        cnt = 0.0
        mean = 0.0
        m2 = 0.0
        for c in range(n_chunks):
            if part_count is None:
                nb = float(min(n, (c + 1) * chunk) - c * chunk)
            else:
                nb = part_count[c, s]
            cnt, mean, m2 = chan_merge(cnt, mean, m2, nb, part_mean[c, s], part_m2[c, s])
        mean_out[s] = mean
        m2_out[s] = m2


@_strict
def merge_states(count_a, mean_a, m2_a, lo_a, count_b, mean_b, m2_b, lo_b, count, mean, m2, lo):
    """Merge two ``(count, mean, M2, mean_lo)`` states elementwise into the
    last four arrays (:func:`nbnorm._welford.merge_states`: compensated
    means; a side with count 0 is the identity)."""
    for i in range(count.size):
        _, mean[i], lo[i], m2[i] = merge_state(float(count_a[i]), mean_a[i], lo_a[i], m2_a[i],
                                               float(count_b[i]), mean_b[i], lo_b[i], m2_b[i])
        count[i] = count_a[i] + count_b[i]


@_pjit
def merge_sums(part_s1, part_s2, s1_out, s2_out):
    """Sum chunk partials in order, per statistic (float64)."""
    n_chunks, n_stats = part_s1.shape
    for i_ in prange(n_stats):
        s = np.int64(i_)
        t1 = 0.0
        t2 = 0.0
        for c in range(n_chunks):
            t1 += part_s1[c, s]
            t2 += part_s2[c, s]
        s1_out[s] = t1
        s2_out[s] = t2


@_strict
def mean_and_variance(pivots, mean_rel, m2, dof, mean_out, var_out):
    """``mean = pivot + (mean − pivot)`` and ``var = M2 / dof`` per statistic,
    computed in float64 and stored in the outputs' dtype (``dof`` 0 gives
    ``M2/0``: inf or NaN, as NumPy).  One call in place of several NumPy
    operations: on caches that a large reduction has just flushed, each of
    those costs tens of microseconds."""
    for i in range(pivots.size):
        mean_out[i] = pivots[i] + mean_rel[i]
        var_out[i] = m2[i] / dof


# ------------------------------------ per-statistic coefficients, in one call
# Each replaces several NumPy operations on statistic vectors (about a
# microsecond each, far more on caches a large kernel has just flushed) and
# gives their results bit for bit: compiled without fast-math, every
# expression is evaluated as NumPy evaluates it.
@_strict
def forward_coefficients(pivots, mean_rel, m2, n, eps, w, b, mean_out, var_out, inv_out,
                         centre, alpha, shift):
    """From the kernels' ``(mean − pivot, M2)``: the statistics (stored in the
    outputs' dtype) and the affine map ``y = (x − centre)·alpha + shift`` of
    :func:`nbnorm._cpu.ops.prepare_forward` — the mean ``hi + lo``
    (:func:`two_sum`), ``alpha = weight·invstd``, ``centre = hi`` (0 where
    alpha is 0: an infinite variance, y is the bias), ``shift = bias − lo·alpha``."""
    for i in range(pivots.size):
        hi, lo = two_sum(pivots[i], mean_rel[i])
        if not np.isfinite(hi):
            lo = 0.0
        var = m2[i] / n
        inv = invstd_of(var, eps)
        a = forward_scale(inv, w[i])
        centre[i] = 0.0 if a == 0 else hi
        alpha[i] = a
        shift[i] = b[i] - lo * a
        mean_out[i] = hi
        var_out[i] = var
        inv_out[i] = inv


@_strict
def inference_scale(var, eps, w, alpha):
    """``alpha = weight/√(var + eps)`` per statistic."""
    for i in range(var.size):
        alpha[i] = forward_scale(invstd_of(var[i], eps), w[i])


@_strict
def backward_coefficient_vectors(n, inv, w, s1, s2, training, a, b, c, dweight, dbias):
    """:func:`nbnorm._welford.backward_coefficients` per statistic from the
    sums ``s1 = Σdy``, ``s2 = Σdy·(x − mean)``; ``dweight = s2·invstd`` and
    ``dbias = s1`` stored in their dtype."""
    for i in range(inv.size):
        a[i], b[i], c[i] = backward_coefficients(n, inv[i], w[i], s1[i], s2[i], training)
        dweight[i] = s2[i] * inv[i]
        dbias[i] = s1[i]


@_strict
def update_running(running, batch, momentum, scale):
    """``running ← (1 − momentum)·running + momentum·scale·batch`` in place
    where ``scale·batch`` is finite (1-D arrays); returns how many entries
    were left unchanged."""
    skipped = 0
    for i in range(running.size):
        bt = np.float64(batch[i]) * scale
        if np.isfinite(bt):
            running[i] = (1.0 - momentum) * np.float64(running[i]) + momentum * bt
        else:
            skipped += 1
    return skipped
