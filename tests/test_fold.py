"""fold_batch_norm and BatchNorm.fold_into: a linear or convolution layer
followed by an eval-mode BatchNorm equals the folded layer."""
from __future__ import annotations

import numpy as np
import pytest

import nbnorm

from helpers import normal


def conv2d(x, w, b):
    """Valid 2-D convolution (cross-correlation) of ``x`` (N, Cin, H, W) with ``w``
    (Cout, Cin, kh, kw) through a strided window view."""
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


def trained_bn(c, dtype, seed=0):
    bn = nbnorm.BatchNorm(c, dtype=dtype)
    rng = np.random.default_rng(seed)
    bn.weight[:] = rng.uniform(0.5, 2.0, c)
    bn.bias[:] = rng.standard_normal(c)
    for i in range(3):
        bn(normal((8, c, 3, 3), dtype, seed=seed + i, loc=2.0 * i, scale=1.0 + i))
    return bn.eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_then_batchnorm_equals_the_folded_conv(dtype):
    bn = trained_bn(5, dtype)
    w = normal((5, 3, 3, 3), dtype, seed=1)
    b = normal((5,), dtype, seed=2)
    x = normal((2, 3, 7, 6), dtype, seed=3)
    ref = bn(conv2d(x, w, b))
    w2, b2 = bn.fold_into(w, b)
    assert w2.dtype == dtype and b2.dtype == dtype and w2.shape == w.shape
    got = conv2d(x, w2, b2)
    tol = 64 * np.finfo(dtype).eps * np.abs(ref).max()
    assert np.abs(got - ref).max() <= tol


@pytest.mark.parametrize("out_axis", [0, 1, -1])
def test_linear_layouts_and_no_bias(out_axis):
    bn = trained_bn(4, np.float64, seed=5)
    x = normal((6, 3), np.float64, seed=6)
    w = normal((4, 3) if out_axis == 0 else (3, 4), np.float64, seed=7)
    lin = (lambda v, ww, bb: v @ ww.T + bb) if out_axis == 0 else (lambda v, ww, bb: v @ ww + bb)
    ref = bn(lin(x, w, 0.0)[:, :, None])[:, :, 0]
    sd = bn.state_dict()
    w2, b2 = nbnorm.fold_batch_norm(w, None, sd["running_mean"], sd["running_var"],
                                    sd["weight"], sd["bias"], eps=bn.eps, out_axis=out_axis)
    np.testing.assert_allclose(lin(x, w2, b2), ref, rtol=1e-6, atol=1e-6)   # float32 state
    # the formula itself, in float64: s = γ/√(v + eps), W' = W·s, b' = (0 − μ)·s + β
    s = sd["weight"].astype(np.float64) / np.sqrt(sd["running_var"].astype(np.float64) + bn.eps)
    np.testing.assert_allclose(w2, w * (s[:, None] if out_axis == 0 else s[None, :]), rtol=1e-15)
    np.testing.assert_allclose(b2, -sd["running_mean"] * s + sd["bias"], rtol=1e-15)


def test_defaults_gamma_beta_and_errors():
    w = np.ones((2, 3), np.float32)
    w2, b2 = nbnorm.fold_batch_norm(w, None, np.array([1.0, 2.0]), np.array([3.0, 0.0]), eps=1.0)
    np.testing.assert_allclose(w2[:, 0], [0.5, 1.0])
    np.testing.assert_allclose(b2, [-0.5, -2.0])
    w16 = np.full((2, 2), 60000, np.float16)
    with pytest.raises(OverflowError, match="folded weight overflows float16"):
        nbnorm.fold_batch_norm(w16, None, np.zeros(2), np.full(2, 0.25), eps=0.0)
    cases = [
        (ValueError, "running_mean", lambda: nbnorm.fold_batch_norm(w, None, np.zeros(3),
                                                                    np.ones(2))),
        (ValueError, "gamma", lambda: nbnorm.fold_batch_norm(w, None, np.zeros(2), np.ones(2),
                                                             np.ones(5))),
        (nbnorm.AxisError, "out_axis", lambda: nbnorm.fold_batch_norm(w, None, np.zeros(2),
                                                                      np.ones(2), out_axis=2)),
        (ValueError, "running_var", lambda: nbnorm.fold_batch_norm(w, None, np.zeros(2),
                                                                   -np.ones(2), eps=0.0)),
        (TypeError, "weight", lambda: nbnorm.fold_batch_norm(w.astype(int), None, np.zeros(2),
                                                             np.ones(2))),
    ]
    for exc, word, call in cases:
        with pytest.raises(exc, match=word):
            call()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        nbnorm.BatchNorm(2, track_running_stats=False).fold_into(w)


# ------------------------------------------------------------ overflow
F64_MAX = float(np.finfo(np.float64).max)
TINY = 2.0**-1074                                  # the smallest subnormal float64


def exact_fold(w, b, rm, rv, g, be, eps, out_axis=0):
    """``(W', b', |(b − running_mean)·s|)`` as Decimals with an unbounded
    exponent, at 1200 digits: exact sums and products of float64s (up to
    767 digits each) but for a relative 1e-1200 — far below the smallest
    subnormal at any magnitude a fold reaches — so that cancellation in
    ``b'`` is exact too: the reference the float64 results are held to."""
    from decimal import Decimal as D, localcontext
    with localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 1200, 10**6, -10**6
        s = [D(gi) / (D(vi) + D(eps)).sqrt() for gi, vi in zip(g, rv)]
        wm = np.moveaxis(np.asarray(w, np.float64), out_axis, 0)
        W = [[D(v) * s[i] for v in wm[i].ravel()] for i in range(len(s))]
        T = [(D(bi) - D(mi)) * si for bi, mi, si in zip(b, rm, s)]
        B = [t + D(e) for t, e in zip(T, be)]
        return W, B, [abs(t) for t in T]


def check_against_exact(w, b, rm, rv, g, be, eps, dtype=np.float64):
    """``fold_batch_norm`` either returns finite results within a few
    roundings of the exact ones, or raises ``OverflowError`` — and it raises
    exactly when an exact result is past ``dtype``'s largest by more than
    the computation's rounding error (less: it must not); never inf or NaN
    from finite inputs."""
    from decimal import Decimal as D
    big = D(float(np.finfo(dtype).max))
    u = D(float(np.finfo(dtype).eps) / 2 + 2.0**-53)
    tiny = D(TINY if dtype == np.float64 else float(np.finfo(dtype).smallest_subnormal))
    W, B, T = exact_fold(w, b, rm, rv, g, be, eps)
    # (exact, error bound): W' = W·s rounds 4 times (√, /, ×, the cast); b' 6 times, relative
    # to the magnitudes of its terms (b − running_mean may cancel)
    cases = [(x, 8 * u * abs(x) + 4 * tiny) for row in W for x in row]
    cases += [(x, 8 * u * (t + abs(x)) + 4 * tiny) for x, t in zip(B, T)]
    over = any(abs(x) - err > big for x, err in cases)
    fits = all(abs(x) + err < big for x, err in cases)
    try:
        w2, b2 = nbnorm.fold_batch_norm(w.astype(dtype), b, rm, rv, g, be, eps=eps)
    except OverflowError as e:
        assert not fits, f"OverflowError although every result fits {dtype}: {e}"
        return "overflow"
    assert not over, f"no OverflowError although a result is past {big}"
    assert w2.dtype == dtype and b2.dtype == dtype
    assert np.all(np.isfinite(w2)) and np.all(np.isfinite(b2)), (w2, b2)
    got = [float(v) for i in range(len(W)) for v in w2[i].ravel()] + [float(v) for v in b2]
    for v, (x, err) in zip(got, cases):
        assert abs(D(v) - x) <= err, (v, x, err)
    return "finite"


def magnitudes(lo=-300, hi=300, zero=True, sign=True):
    """``±10**k`` for real ``k`` in ``[lo, hi]`` (and 0, about one draw in 8)."""
    from hypothesis import strategies as st
    m = st.builds(lambda k, s: s * 10.0**k, st.floats(lo, hi),
                  st.sampled_from([1.0, -1.0] if sign else [1.0]))
    return st.one_of(st.just(0.0), *[m] * 7) if zero else m


def _fold_sweep():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=100)
    @given(data=st.data(), c=st.integers(1, 3), dtype=st.sampled_from([np.float64, np.float32]),
           eps=st.one_of(st.just(0.0), st.just(1e-5), magnitudes(-300, 300, zero=False,
                                                                  sign=False)))
    def test(data, c, dtype, eps):
        vec = lambda name, **kw: np.array(data.draw(st.lists(magnitudes(**kw), min_size=c,
                                                             max_size=c), label=name))
        hi = 37 if dtype == np.float32 else 300
        w = np.array(data.draw(st.lists(magnitudes(-hi, hi), min_size=2 * c, max_size=2 * c),
                               label="w")).reshape(c, 2)
        rv = vec("running_var", zero=eps > 0, sign=False)
        check_against_exact(w, vec("bias"), vec("running_mean"), rv, vec("gamma"), vec("beta"),
                            eps, dtype)
    return test


test_fold_of_extreme_magnitudes_is_exact_or_raises_overflow = _fold_sweep()


@pytest.mark.parametrize("case,outcome", [
    # weight 1e300 scaled by 1/√1e-30: 1e315
    (dict(w=1e300, rv=1e-30), "overflow"),
    # the scale alone overflows (1e450), the folded weight does not (1e250)
    (dict(w=1e-200, rv=1e-300, g=1e300), "finite"),
    # the scale alone underflows (1e-450), the folded weight does not (1e-250)
    (dict(w=1e200, rv=1e300, g=1e-300), "finite"),
    # running_var + eps overflows float64; its square root does not
    (dict(w=1e300, rv=1.7e308, eps=1e308), "finite"),
    (dict(w=1e-100, rv=1.7e308, eps=1e308, g=1e300), "finite"),
    # b − running_mean overflows, (b − running_mean)·s does not: 5e307
    (dict(b=1e308, rm=-1e308, rv=16.0), "finite"),
    # (b − running_mean)·s overflows (2e308), + beta brings it back: 1e308
    (dict(b=1e308, rm=-1e308, be=-1e308), "finite"),
    (dict(b=1e308, rm=-1e308), "overflow"),
    (dict(b=-1.7e308, rm=1.7e308, rv=4.0, be=-1.7e308), "overflow"),
    # the largest float64 through s = 1: exactly itself
    (dict(w=F64_MAX, b=F64_MAX, be=0.0), "finite"),
    (dict(w=F64_MAX, b=F64_MAX, rm=-F64_MAX, rv=4.0, be=-F64_MAX), "finite"),
    # subnormal inputs and results
    (dict(w=TINY, rv=1e-300, g=1e-10), "finite"),
    (dict(w=1e-300, b=1e-300, rv=1e300), "finite"),
])
def test_fold_extremes(case, outcome):
    """Finite inputs whose float64 intermediates overflow or underflow on
    their own: the results are exact to a few roundings, or OverflowError
    exactly where a folded value is past float64's largest."""
    c = dict(w=1.0, b=0.0, rm=0.0, rv=1.0, g=1.0, be=0.0, eps=0.0)
    c.update(case)
    vec = lambda v: np.array([v, 1.0])
    w = np.array([[c["w"], -c["w"]], [1.0, 2.0]])
    assert check_against_exact(w, vec(c["b"]), vec(c["rm"]), vec(c["rv"]), vec(c["g"]),
                               vec(c["be"]), c["eps"]) == outcome


def test_fold_overflow_errors_name_what_overflowed():
    w = np.array([[1.0, 2.0], [1e300, 3.0]])
    one, zero = np.ones(2), np.zeros(2)
    with pytest.raises(OverflowError, match=r"folded weight overflows float64 at output "
                                            r"channel 1: weight\[1, 0\] = 1e\+300 folds to "
                                            r"about 1e\+315"):
        nbnorm.fold_batch_norm(w, None, zero, np.array([1.0, 1e-30]), eps=0.0)
    with pytest.raises(OverflowError, match=r"folded weight overflows float64 at output "
                                            r"channel 1"):
        nbnorm.fold_batch_norm(w.T, None, zero, np.array([1.0, 1e-30]), eps=0.0, out_axis=1)
    with pytest.raises(OverflowError, match=r"folded bias overflows float64 at output channel "
                                            r"0: bias folds to about 2e\+308"):
        nbnorm.fold_batch_norm(np.ones((2, 2)), np.array([1e308, 0.0]), np.array([-1e308, 0.0]),
                               one, eps=0.0)
    # float32: a finite element past float32's largest is refused, also beside a NaN input
    w32 = np.array([[np.nan, 1.0], [1e38, 1.0]], np.float32)
    with pytest.raises(OverflowError, match="folded weight overflows float32"):
        nbnorm.fold_batch_norm(w32, None, zero, np.array([1.0, 0.01]), eps=0.0)


def test_fold_non_finite_inputs_propagate_and_ordinary_results_are_the_plain_formula():
    """Non-finite inputs are the caller's: they propagate as in the plain
    formula (no error).  Results in the normal range are bitwise the plain
    float64 formula's rounding."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        c = 7
        w = rng.standard_normal((c, 3, 2, 2)) * 10.0 ** rng.uniform(-30, 30)
        b, rm, be = (rng.standard_normal(c) * 10.0 ** rng.uniform(-30, 30) for _ in range(3))
        rv = rng.uniform(0, 2, c) * 10.0 ** rng.uniform(-30, 30)
        g = rng.standard_normal(c)
        eps = float(rng.choice([0.0, 1e-5, 1e-3]))
        s = g / np.sqrt(rv + eps)
        w2, b2 = nbnorm.fold_batch_norm(w, b, rm, rv, g, be, eps=eps)
        np.testing.assert_array_equal(w2, w * s[:, None, None, None])
        np.testing.assert_array_equal(b2, (b - rm) * s + be)
    w = np.array([[np.inf, 1.0], [np.nan, 2.0], [1.0, 1.0]])
    with np.errstate(all="ignore"):
        w2, b2 = nbnorm.fold_batch_norm(w, np.array([np.inf, 0.0, 1.0]), np.zeros(3),
                                        np.array([1.0, 1.0, np.inf]), eps=0.0)
    np.testing.assert_array_equal(w2, [[np.inf, 1.0], [np.nan, 2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(b2, [np.inf, 0.0, 0.0])
