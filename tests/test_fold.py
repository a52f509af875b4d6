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
