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


def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Merge two ``(n, mean, M2)`` partial statistics; returns the merged triple."""
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    f = n_b / n
    delta = mean_b - mean_a
    return n, mean_a + delta * f, m2_a + m2_b + delta * delta * n_a * f


def shifted_moments(n, shift, s1, s2):
    """Exact ``(mean, M2)`` of ``n`` values from sums taken about ``shift``.

    ``s1 = Σ (x − shift)`` and ``s2 = Σ (x − shift)²``:
    ``mean = shift + s1/n`` and ``M2 = s2 − s1²/n`` (the corrected two-pass
    formula; accurate when ``shift`` is near the mean).
    """
    d = s1 / n
    return shift + d, max(s2 - s1 * d, 0.0)


def invstd_of(var, eps):
    """``1 / √(var + eps)`` (scalars or arrays)."""
    return 1.0 / (var + eps) ** 0.5


def forward_coefficients(mean, invstd, weight, bias):
    """Per-statistic ``(α, β)`` with ``y = x·α + β = (x − mean)·invstd·weight + bias``."""
    alpha = weight * invstd
    return alpha, bias - mean * alpha


def backward_coefficients(n, mean, invstd, weight, sum_dy, sum_dy_xmu, training):
    """Per-statistic ``(A, B, C)`` with ``dx = dy·A + x·B + C``.

    With ``x̂ = (x − mean)·invstd``, ``dweight = Σ dy·x̂`` and ``dbias = Σ dy``:

    - training: ``dx = weight·invstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂))``, i.e.
      ``A = weight·invstd``, ``B = −A·invstd²·Σdy(x − mean)/n`` and
      ``C = −A·Σdy/n − B·mean``;
    - frozen statistics (``training`` false): ``dx = dy·weight·invstd``.
    """
    a = weight * invstd
    if not training:
        return a, 0.0, 0.0
    b = -a * invstd * invstd * sum_dy_xmu / n
    return a, b, -a * sum_dy / n - b * mean
