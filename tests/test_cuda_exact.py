"""CUDA statistics at large mean/std against exact rational references.

Data are ``loc + N(0, 1)`` with ``loc`` = 1e8 (float64), 1e4 (float32) and
1e3 (float16, whose 11-bit significand cannot resolve std = 1e-4·mean): the
biased variance ``M2/n`` must be within ``DATA``'s relative tolerance of the
exact one (1e-14 float64, 1e-6 float32 statistics), the mean within two
roundings of the statistic type.  Shapes are small for the
simulator but make every statistic span many threads of a block, several
blocks (split reductions merged by ``finalize_welford``) or both; on the
simulator the mapping and split of each case are checked so that a change
of launch configuration cannot silently drop a path.
"""

from fractions import Fraction

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

cuda = pytest.importorskip("numba.cuda")
from numba import config  # noqa: E402

if not config.ENABLE_CUDASIM:
    try:
        if not cuda.is_available():
            pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set", allow_module_level=True)
    except Exception as e:  # pragma: no cover
        pytest.skip(f"CUDA unavailable: {e}", allow_module_level=True)

from exact import exact_moments, relative_error  # noqa: E402

import nbnorm  # noqa: E402
from nbnorm import _layout  # noqa: E402
from nbnorm._cuda import backend as B  # noqa: E402
from nbnorm._cuda import launch as L  # noqa: E402

# dtype: (mean, std, largest relative variance error)
DATA = {np.float64: (1e8, 1.0, 1e-14), np.float32: (1e4, 1.0, 1e-6),
        np.float16: (1e3, 1.0, 1e-6)}

# (base shape, view of the base, axis, thread mapping, split into several chunks)
LAYOUTS = {
    "nchw": ((4, 3, 16, 16), None, (0, 2, 3), "inner_reduced", True),
    "channels_last": ((4, 16, 16, 3), lambda a: a.transpose(0, 3, 1, 2), (0, 2, 3), "inner_kept",
                      True),
    "rows_split": ((2, 4096), None, 1, "inner_reduced", True),
    "rows_blocks": ((12, 512), None, 1, "inner_reduced", False),
    "columns": ((512, 12), None, 0, "inner_kept", True),
    "all": ((64, 64), None, None, "inner_reduced", True),
}


def _case(layout, dtype):
    """``(host view, device view, axis, exact mean, exact var)``; asserts the
    kernel mapping and split that ``layout`` is meant to exercise."""
    shape, view, axis, mapping, split = LAYOUTS[layout]
    loc, std, _ = DATA[dtype]
    rng = np.random.default_rng(7)
    h = (loc + std * rng.standard_normal(shape)).astype(dtype)
    h = h if view is None else view(h)
    d = B.to_device_like(h)
    plan = L.DevPlan(h.shape, _layout.normalize_axis(axis, h.ndim), L.strides_of(d), 0)
    assert plan.inner_kept == (mapping == "inner_kept")
    if B.SIM:      # the launch constants the shapes were chosen for
        assert (plan.n_chunks > 1) == split
        assert plan.inner_kept or plan.width == B.TPB    # a full block per (statistic, chunk)
    mean, var = exact_moments(h, axis)
    return h, d, axis, mean, var


def _stat_eps(dtype):
    return float(np.finfo(B.stat_dtype(dtype)).eps)


@pytest.mark.parametrize("dtype", list(DATA))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_moments_exact_at_large_mean(layout, dtype):
    _, d, axis, em, ev = _case(layout, dtype)
    mean, var = nbnorm.moments(d, axis=axis)
    assert relative_error(mean.copy_to_host(), em) <= 2 * _stat_eps(dtype)
    assert relative_error(var.copy_to_host(), ev) <= DATA[dtype][2]


@pytest.mark.parametrize("dtype", list(DATA))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_forward_exact_at_large_mean(layout, dtype):
    """The backend's mean and var, ``1/invstd² − eps`` of the public call, and
    ``y`` against ``(x − exact mean)·invstd`` with the returned ``invstd``."""
    h, d, axis, em, ev = _case(layout, dtype)
    ax = _layout.normalize_axis(axis, h.ndim)
    _, mean, var, _ = B.forward(d, None, None, ax, 0.0, None)
    assert relative_error(mean.copy_to_host(), em) <= 2 * _stat_eps(dtype)
    assert relative_error(var.copy_to_host(), ev) <= DATA[dtype][2]

    y, mean, invstd = nbnorm.batch_norm_forward(d, axis=axis, eps=0.0)
    inv = np.asarray(invstd.copy_to_host(), np.float64)
    assert relative_error(mean.copy_to_host(), em) <= 2 * _stat_eps(dtype)
    assert relative_error(1.0 / inv ** 2, ev) <= DATA[dtype][2] + 4 * _stat_eps(dtype)

    kept = [k for k in range(h.ndim) if k not in ax]
    keep = tuple(np.shape(em)[kept.index(k)] if k in kept else 1 for k in range(h.ndim))
    em_b = np.broadcast_to(np.reshape(em, keep), h.shape)
    inv_b = np.broadcast_to(np.reshape(inv, keep), h.shape)
    y = y.copy_to_host()
    worst = max(abs(Fraction(float(g)) - (Fraction(float(v)) - m) * Fraction(float(i)))
                / (1 + abs(float(g)))
                for g, v, m, i in zip(y.ravel(), h.ravel(), em_b.ravel(), inv_b.ravel()))
    assert worst <= 64 * float(np.finfo(dtype).eps)
