"""Merging of chunk partials (Chan for moments, plain sums for the
backward) and of two Moments states; the moments' final values."""
from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import (_pjit, _strict, backward_coefficients, chan_merge, forward_scale, invstd_of,
                   merge_state, narrow, two_sum)


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
def absolute_state(part_count, mean_rel, pivots, n, count, mean, lo):
    """A reduction's per-statistic state from the kernels' relative one:
    ``mean + lo = pivot + (mean − pivot)`` (:func:`two_sum`: the rounded sum
    and its error; ``lo`` 0 where the mean is not finite) and ``count``, the
    chunks' counts of non-NaN values added (``part_count``, with skipna:
    the mean NaN where it is 0) or ``n`` (``part_count`` None)."""
    for s in range(mean.size):
        m, e = two_sum(pivots[s], mean_rel[s])
        if part_count is None:
            c = n
        else:
            c = 0.0
            for k in range(part_count.shape[0]):
                c += part_count[k, s]
            if c == 0:
                m = np.nan
        count[s] = c
        mean[s] = m
        lo[s] = e if np.isfinite(m) else 0.0


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


@_strict
def group_forward_coefficients(pivots, mean_rel, m2, n_part, groups, per, parts, eps, w, b,
                               mean_out, var_out, inv_out, centre, alpha, shift, mean_st,
                               inv_st):
    """Group norm from ``parts`` moments per group (flat ``(N·G·parts,)``,
    ``n_part`` values each: per (n, c), ``parts = per``, or per (n, g),
    ``parts = 1``): each group's parts merged in order by Chan's formula with
    compensated means (:func:`nbnorm._welford.merge_states`), its biased
    variance and invstd (``(N·G,)``), and the per-(n, c) affine map ``y =
    (x − centre)·alpha + shift`` with ``alpha = invstd·weight[c]``,
    ``centre`` the group's mean (0 where alpha is 0), ``shift = bias[c]``.
    ``mean_st``/``inv_st``: the mean and invstd again, in the statistics'
    dtype (rounded as ``astype`` rounds; they may be ``mean_out``/``inv_out``)."""
    for s in range(mean_out.size):
        p0 = s * parts
        cnt = n_part
        hi, lo = two_sum(pivots[p0], mean_rel[p0])
        if not np.isfinite(hi):
            lo = 0.0
        mm2 = m2[p0]
        for j in range(1, parts):
            h2, l2 = two_sum(pivots[p0 + j], mean_rel[p0 + j])
            if not np.isfinite(h2):
                l2 = 0.0
            cnt, hi, lo, mm2 = merge_state(cnt, hi, lo, mm2, n_part, h2, l2, m2[p0 + j])
        var = mm2 / cnt
        inv = invstd_of(var, eps)
        mean_out[s] = hi
        var_out[s] = var
        inv_out[s] = inv
        mean_st[s] = hi
        inv_st[s] = inv
        k0 = s * per
        for j in range(per):
            c = (s % groups) * per + j
            a = inv * w[c]
            alpha[k0 + j] = a
            centre[k0 + j] = 0.0 if a == 0 else hi
            shift[k0 + j] = b[c]


@_strict
def group_backward_coefficients(s1c, s2c, inv, w, groups, per, n_group, a_out, b_out, c_out,
                                dweight, dbias, dweight_st, dbias_st):
    """Group norm's backward from per-(n, c) sums ``s1c = Σdy``, ``s2c =
    Σdy·(x − mean)`` (flat ``(N·C,)``) and per-(n, g) ``centre``/``inv``:
    the per-(n, c) map ``dx = dy·a + (x − mu)·b + c`` (the group's sums
    weighted by ``weight[c]``, :func:`nbnorm._welford.backward_coefficients`)
    and ``dweight[c] = Σ_n s2c·invstd``, ``dbias[c] = Σ_n s1c`` (float64),
    then again in ``dweight_st``/``dbias_st``'s dtype (rounded as ``astype``
    rounds; they may be ``dweight``/``dbias``).  ``inv`` and ``w`` may be
    float32: their values are widened exactly."""
    C = groups * per
    dweight[:] = 0.0
    dbias[:] = 0.0
    for s in range(inv.size):
        k0 = (s // groups) * C + (s % groups) * per
        c0 = (s % groups) * per
        inv_s = np.float64(inv[s])
        t1 = 0.0
        t2 = 0.0
        for j in range(per):
            t1 += s1c[k0 + j] * np.float64(w[c0 + j])
            t2 += s2c[k0 + j] * np.float64(w[c0 + j])
        _, cb, cc = backward_coefficients(n_group, inv_s, 1.0, t1, t2, True)
        for j in range(per):
            a_out[k0 + j] = inv_s * np.float64(w[c0 + j])
            b_out[k0 + j] = cb
            c_out[k0 + j] = cc
            dweight[c0 + j] += s2c[k0 + j] * inv_s
            dbias[c0 + j] += s1c[k0 + j]
    narrow(dweight, dweight_st)
    narrow(dbias, dbias_st)


@_strict
def per_channel(values, per, out, out64):
    """``out[k] = values[k // per]``: a per-(n, g) value for each of the
    group's ``per`` channels, in ``out``'s dtype, and that in float64."""
    for k in range(out.size):
        out[k] = values[k // per]
        out64[k] = out[k]
