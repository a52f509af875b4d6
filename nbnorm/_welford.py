"""Welford/Chan merging and the per-statistic coefficient formulas.

Plain Python scalar functions, compiled by each backend (``numba.njit`` on
the CPU, ``numba.cuda.jit(device=True)`` on the GPU), so the numerics are
written once.

A partial statistic is the triple ``(n, mean, M2)`` with
``M2 = Σ (x − mean)²``; two of them merge exactly (Chan, Golub & LeVeque):

    n  = nₐ + n_b,   δ = μ_b − μₐ
    μ  = μₐ + δ · n_b / n
    M2 = M2ₐ + M2_b + δ² · nₐ · n_b / n

Sums of squares (E[x²] − E[x]²) are never formed: they lose every digit when
|mean| ≫ std.
"""
from __future__ import annotations

import math

import numpy as np


def stat_dtype(dtype):
    """The statistics' (and accumulators') dtype for data of ``dtype``, on every
    backend: float64 for float64 data, float32 otherwise."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Merge two ``(n, mean, M2)`` partial statistics; returns the merged triple.

    Infinite means merge as NumPy's sums do (``inf`` with ``inf`` stays
    ``inf``; ``inf`` with ``-inf`` is NaN).
    """
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    f = n_b / n
    delta = mean_b - mean_a
    if not abs(delta) < math.inf:  # an infinite or NaN mean on either side
        return n, mean_a * (n_a / n) + mean_b * f, m2_a + m2_b + delta * delta
    return n, mean_a + delta * f, m2_a + m2_b + delta * delta * n_a * f


def two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth);
    must be compiled without reassociation."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def merge_states(n_a, hi_a, lo_a, m2_a, n_b, hi_b, lo_b, m2_b):
    """Chan merge of two states whose means are carried as ``hi + lo``
    (a float64 mean and its rounding error): ``δ = (hi_b − hi_a) + (lo_b − lo_a)``
    keeps the digits that ``μ_b − μₐ`` of two rounded means near 10⁸ would
    lose, and ``δ²·nₐn_b/n`` then adds no error of ``ulp(|mean|)``.  Returns
    ``(n, hi, lo, M2)``; a side with ``n = 0`` is the identity; non-finite
    means merge as :func:`chan_merge` (``lo`` 0)."""
    if n_b == 0:
        return n_a, hi_a, lo_a, m2_a
    if n_a == 0:
        return n_b, hi_b, lo_b, m2_b
    n = n_a + n_b
    f = n_b / n
    delta = (hi_b - hi_a) + (lo_b - lo_a)
    if not abs(delta) < math.inf:  # as chan_merge
        return n, hi_a * (n_a / n) + hi_b * f, 0.0, m2_a + m2_b + delta * delta
    t = lo_a + delta * f
    hi = hi_a + t                       # two_sum(hi_a, t), written out: the backends
    bb = hi - hi_a                      # compile each function of this module alone
    return n, hi, (hi_a - (hi - bb)) + (t - bb), m2_a + m2_b + delta * delta * n_a * f


def shifted_moments(n, shift, s1, s2):
    """Exact ``(mean, M2)`` of ``n`` values from sums taken about ``shift``.

    ``s1 = Σ (x − shift)`` and ``s2 = Σ (x − shift)²``:
    ``mean = shift + s1/n`` and ``M2 = s2 − s1²/n`` (the corrected two-pass
    formula; accurate when ``shift`` is near the mean).  A non-finite
    ``shift`` (the block held an inf) gives ``(shift, NaN)``.
    """
    if not (abs(shift) < math.inf):
        return shift, math.nan
    d = s1 / n
    return shift + d, max(s2 - s1 * d, 0.0)


def invstd_of(var, eps):
    """``1 / √(var + eps)`` (scalars or arrays)."""
    return 1.0 / (var + eps) ** 0.5


def forward_scale(invstd, weight):
    """``α = weight·invstd``: the forward map is ``y = (x − mean)·α + bias``.

    Subtracting the mean first keeps constant channels at exactly ``bias``
    and loses nothing to cancellation when |mean| ≫ std.
    """
    return weight * invstd


def backward_coefficients(n, invstd, weight, sum_dy, sum_dy_xmu, training):
    """Per-statistic ``(a, b, c)`` with ``dx = dy·a + (x − mean)·b + c``.

    With ``x̂ = (x − mean)·invstd``, ``dweight = Σ dy·x̂`` and ``dbias = Σ dy``:

    - training: ``dx = weight·invstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂))``, i.e.
      ``a = weight·invstd``, ``b = −a·invstd²·Σdy(x − mean)/n`` and
      ``c = −a·Σdy/n``;
    - frozen statistics (``training`` false): ``dx = dy·weight·invstd``
      (``b = c = 0``; ``x`` is not read).
    """
    a = weight * invstd
    if not training:
        return a, 0.0, 0.0
    return a, -a * invstd * invstd * sum_dy_xmu / n, -a * sum_dy / n


def host_backward_coefficients(m, n, invstd, weight, sum_dy, sum_dy_xmu, training):
    """:func:`backward_coefficients` of ``m`` statistics as host float64
    vectors ``(a, b, c)``, from host arguments that are numbers or hold ``m``
    values in any shape (keepdims included; None: weight 1).  A statistic
    with no values gets NaN coefficients, which no element uses."""
    def vec(v, fill):
        v = np.asarray(fill if v is None else v, np.float64)
        return np.full(m, v) if v.ndim == 0 else np.ascontiguousarray(v).reshape(m)

    with np.errstate(divide="ignore", invalid="ignore"):
        a, b, c = backward_coefficients(vec(n, 1.0), vec(invstd, 0.0), vec(weight, 1.0),
                                        vec(sum_dy, 0.0), vec(sum_dy_xmu, 0.0), training)
    return vec(a, 0.0), vec(b, 0.0), vec(c, 0.0)


# ------------------------------------------- the elementwise map in float32
# ``out = (u − cu)·ca + (v − cv)·cb + cc`` is computed in float32 for float16
# and float32 storage (twice the vector width of float64) with the centres
# split as ``cu = hi + lo``: ``hi`` is cu rounded to float32 and ``lo·ca``
# moves into the constant, so ``u − hi`` stays exact where it cancels and y
# keeps no rounding of the mean.  Only where every float32 value is far from
# the ends of float32's range; other statistics are computed in float64.
NARROW_TOP = 2.0 ** 64       # |centre|, |scale|, |constant| ≤ this (u − hi cannot overflow)
NARROW_LOW = 2.0 ** -64      # a non-zero scale ≥ this (keeps 24 bits: not subnormal)


def narrow_coefficients(cu, ca, cv, cb, cc, has_v):
    """``(ok, cu', ca', cv', cb', cc')``: the coefficients of
    ``out = (u − cu)·ca + (v − cv)·cb + cc`` as float32 (``cc' = cc −
    (cu − cu')·ca − (cv − cv')·cb`` in float64, then rounded; without
    ``v`` (``has_v`` false) ``cv'``, ``cb'`` are 0) and whether the float32
    map may stand in for the float64 one: every centre and the constant at
    most 2⁶⁴ in magnitude (so ``u − cu'`` cannot overflow for any float32
    ``u``), every scale 0 or within [2⁻⁶⁴, 2⁶⁴] (neither overflows nor loses
    bits to the subnormal range) — or a NaN coefficient, which makes every
    output NaN in either map (a statistic of NaN values, e.g. a land pixel
    in a climate field).  The float32 map is then within
    ``ε₃₂·(|(u − cu)·ca| + |(v − cv)·cb| + |cc|)`` (ε₃₂ = 2⁻²³) of the
    exact one, besides the output's own rounding."""
    u32 = np.float32(cu)
    a32 = np.float32(ca)
    c = cc - (cu - float(u32)) * ca
    v32 = np.float32(0.0)
    b32 = np.float32(0.0)
    # (each test is false for NaN; written out: a backend compiles this
    # function alone, no helper)
    ok = abs(u32) <= NARROW_TOP and (ca == 0 or NARROW_LOW <= abs(a32) <= NARROW_TOP)
    nan = cu != cu or ca != ca or cc != cc
    if has_v:
        v32 = np.float32(cv)
        b32 = np.float32(cb)
        c -= (cv - float(v32)) * cb
        ok = (ok and abs(v32) <= NARROW_TOP
              and (cb == 0 or NARROW_LOW <= abs(b32) <= NARROW_TOP))
        nan = nan or cv != cv or cb != cb
    c32 = np.float32(c)
    return (ok and abs(c32) <= NARROW_TOP) or nan, u32, a32, v32, b32, c32


# ----------------------------------------------- statistics near float64's top
# A statistic whose sums about the pivot overflow is recomputed from values
# scaled by powers of two (exact): ``x·2^-k`` with ``k = mean_shift(max|x|, n)``
# sums without overflow, and ``d·2^j`` (``d = x·2^-k − mean·2^-k``,
# ``j = spread_shift(max|d|, n)``) squares and sums without overflow;
# ``mean = ldexp(mean_k, k)``, ``M2 = ldexp(M2_j, 2(k − j))`` (see
# ``nbnorm._extremes`` and the CUDA ``per_stat.rescaled_moments``).

def mean_shift(top, n):
    """``k ≥ 0`` such that ``n`` values of magnitude ≤ ``top·2^-k`` sum below 2^1023."""
    # frexp(n − 1)[1] is ⌈log2 n⌉ for n ≥ 1
    return max(math.frexp(top)[1] + math.frexp(float(n - 1))[1] + 1 - 1023, 0)


def spread_shift(spread, n):
    """``j`` such that ``n`` squares of magnitude ≤ ``(spread·2^j)²`` sum below 2^1022."""
    return (1022 - math.frexp(float(n - 1))[1]) // 2 - math.frexp(spread)[1]


def ldexp_saturating(m, e):
    """``m·2^e``, ±inf where that exceeds float64 (``math.ldexp`` would raise)."""
    if m == 0.0:
        return m
    if math.frexp(m)[1] + e > 1024:
        return math.inf if m > 0 else -math.inf
    return math.ldexp(m, e)
