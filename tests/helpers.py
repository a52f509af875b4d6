"""Shared helpers: array layouts, data generation and error bounds.

Error bounds are written as ``|got − ref| ≤ eps·(c_out·|ref| + K·S)``: ``eps``
is the unit roundoff of the precision involved, ``S`` the magnitude of the
terms that enter the computation (so that cancellation is accounted for) and
``K`` a small multiple covering the length of the accumulation.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

FLOATS = (np.float16, np.float32, np.float64)


def eps(dtype):
    """Machine epsilon of ``dtype``."""
    return float(np.finfo(dtype).eps)


def stat_dtype(dtype):
    """Statistics are float32 for float16/float32 input, float64 for float64."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def stat_eps(dtype):
    """Precision of the statistics and of the accumulations for ``dtype`` input."""
    return eps(stat_dtype(dtype))


def sum_k(n):
    """Error-growth factor of a sum of ``n`` terms accumulated in blocks.

    Blocks of at most 4096 terms are summed in the working precision and
    merged in float64; random-sign rounding errors grow like ``√n`` inside a
    block, so the factor is ``4·√min(n, 4096) + 8`` (about 264 at most).
    """
    return 4.0 * math.sqrt(min(max(n, 1), 4096)) + 8.0


def keep_shape(shape, axis):
    return tuple(1 if d in axis else s for d, s in enumerate(shape))


def stat_shape(shape, axis):
    return tuple(s for d, s in enumerate(shape) if d not in axis)


def norm_axis(axis, ndim):
    """Plain-Python axis normalisation (independent of the library's)."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in items))


# ------------------------------------------------------------------ layouts
def relayout(a, perm=None, flip=(), step=1, order="C", start=0, fill=np.nan):
    """Copy of ``a`` (same shape and values) stored in another layout.

    The memory holds the dimensions in the order ``perm`` (outer → inner),
    in ``order`` ("C" or "F"), every ``step``-th element starting at
    ``start`` (the gaps hold ``fill``), with the dimensions in ``flip``
    walked backwards (negative strides).
    """
    a = np.asarray(a)
    nd = a.ndim
    perm = tuple(range(nd)) if perm is None else tuple(perm)
    mshape = tuple(a.shape[p] * step + start for p in perm)
    buf = np.empty(mshape, dtype=a.dtype, order=order)
    if a.dtype.kind == "f":
        buf[...] = fill
    else:
        buf[...] = 0
    view = buf[tuple(slice(start, None, step) for _ in perm)]
    b = view.transpose(np.argsort(perm))
    for d in flip:
        b = np.flip(b, axis=d)
    b[...] = a
    assert b.shape == a.shape
    return b


def channels_last(a):
    """NCHW-shaped view of NHWC memory (the last dimension is innermost)."""
    nd = a.ndim
    return relayout(a, perm=(0,) + tuple(range(2, nd)) + (1,))


def named_layouts(a):
    """A dictionary of differently stored copies of ``a``."""
    nd = a.ndim
    out = {
        "C": np.ascontiguousarray(a),
        "F": np.asfortranarray(a),
        "reversed-perm": relayout(a, perm=tuple(reversed(range(nd)))),
        "step2": relayout(a, step=2, start=1),
        "flipped": relayout(a, flip=tuple(range(0, nd, 2))),
        "flipped-all-F": relayout(a, flip=tuple(range(nd)), order="F"),
    }
    if nd >= 3:
        out["channels-last"] = channels_last(a)
        out["channels-last-step-flip"] = relayout(
            a, perm=(0,) + tuple(range(2, nd)) + (1,), step=2, flip=(1, nd - 1))
    return out


def all_axis_subsets(ndim, include_empty=False):
    """Every subset of ``range(ndim)`` as a tuple (the empty one optionally)."""
    lo = 0 if include_empty else 1
    for r in range(lo, ndim + 1):
        yield from itertools.combinations(range(ndim), r)


# --------------------------------------------------------------------- data
def normal(shape, dtype=np.float64, *, seed=0, loc=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


# ----------------------------------------------------------------- checking
def assert_within(got, ref, bound, what=""):
    """Elementwise ``|got − ref| ≤ bound`` (NaN must match NaN, inf match inf)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), ref.shape)
    nan_ok = np.isnan(got) == np.isnan(ref)
    assert nan_ok.all(), f"{what}: NaN mismatch at {np.argwhere(~nan_ok)[:5].tolist()}"
    fin = np.isfinite(ref)
    assert (got[~fin & ~np.isnan(ref)] == ref[~fin & ~np.isnan(ref)]).all(), f"{what}: inf mismatch"
    err = np.where(fin, np.abs(got - ref), 0.0)
    bad = ~(err <= bound) & fin
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        ratio = np.max(np.where(fin, err / np.maximum(bound, 1e-300), 0.0))
        raise AssertionError(
            f"{what}: |got - ref| > bound at {len(np.argwhere(bad))} of {ref.size} "
            f"(first {i}: got {got[i]!r}, ref {ref[i]!r}, bound {bound[i]!r}; "
            f"worst err/bound {ratio:.3g})")


def moments_bound(x, axis, mean_ref, var_ref, ddof=0):
    """Bounds for ``(mean, var)`` of ``x`` over ``axis``."""
    ax = norm_axis(axis, np.ndim(x))
    xd = np.asarray(x, dtype=np.float64)
    n = int(np.prod([xd.shape[d] for d in ax]))
    e = stat_eps(np.asarray(x).dtype)
    k = sum_k(n)
    v = np.nan_to_num(np.asarray(var_ref, np.float64), nan=0.0, posinf=0.0)
    spread = np.sqrt(np.maximum(v, 0.0) * max(n - ddof, 1) / max(n, 1))
    # |mean| enters through the reference's own pairwise float64 sum (error
    # ∝ log2 n) and through the sequential merging of per-block means, each
    # rounding by ½ulp(mean): a random walk over at most n/8 merges
    mean_b = e * ((2 + math.log2(max(n, 1)) + math.sqrt(n / 8)) * np.abs(mean_ref)
                  + k * spread)
    # partial means are rounded (error eps·|mean|) before they are merged,
    # which moves M2/n by up to eps·|mean|·std
    with np.errstate(invalid="ignore"):
        var_b = e * (k * np.abs(var_ref) + 4 * np.abs(mean_ref) * spread)
    return mean_b, var_b


def _param(a, k, fill):
    return np.full(k, fill) if a is None else np.asarray(a, np.float64).reshape(k)


def affine_bound(x, axis, y_ref, mean, invstd, weight, bias, n=None):
    """Bound on ``y = (x − mean)·invstd·w + b`` computed as ``x·α + β``.

    ``n`` is the reduction length when the statistics were computed from
    ``x`` (None when they are given, as in inference).  Terms: output
    rounding ``eps_out·|y|``; the cancellation of ``x·α + β``,
    ``eps_s·(|x| + |mean|)·invstd·|w| + |b|`` (times ``log2 n`` for the
    mean's own error); the statistics' errors ``eps_s·sum_k(n)·|w|·(1 + |x̂|)``
    (mean error in units of the standard deviation, relative variance error
    times ``|x̂|``).
    """
    xa = np.asarray(x)
    xd = xa.astype(np.float64)
    ax = norm_axis(axis, xd.ndim)
    k = keep_shape(xd.shape, ax)
    w = np.abs(_param(weight, k, 1.0))
    b = np.abs(_param(bias, k, 0.0))
    inv = _param(invstd, k, 1.0)
    mu = _param(mean, k, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        xhat = np.abs(xd - mu) * inv
    es = stat_eps(xa.dtype)
    eo = eps(xa.dtype)
    tiny = float(np.finfo(xa.dtype).smallest_subnormal)
    c = 4.0 if n is None else 4.0 + math.log2(n)
    k_n = 0.0 if n is None else sum_k(n)
    with np.errstate(invalid="ignore", over="ignore"):
        return (eo * np.abs(y_ref) + c * es * ((np.abs(xd) + np.abs(mu)) * inv * w + b)
                + es * k_n * w * (1 + xhat) + tiny)


def backward_bounds(dy, x, axis, mean, invstd, weight, training, dx_ref):
    """Bounds for ``(dx, dweight, dbias)`` of the backward.

    The sums ``Σdy`` and ``Σdy·x̂`` carry ``eps_s·sum_k(n)`` times the sum of
    the magnitudes of their terms; ``dx = dy·A + x·B + C`` adds the
    cancellation of ``x·B + C`` (``(|x| + |mean|)·|B|``) and output rounding.
    """
    xa = np.asarray(x)
    xd = xa.astype(np.float64)
    g = np.asarray(dy, np.float64)
    ax = norm_axis(axis, xd.ndim)
    k = keep_shape(xd.shape, ax)
    n = int(np.prod([xd.shape[d] for d in ax]))
    w = np.abs(_param(weight, k, 1.0))
    inv = _param(invstd, k, 1.0)
    mu = _param(mean, k, 0.0)
    xhat = (xd - mu) * inv
    es, eo = stat_eps(xa.dtype), eps(xa.dtype)
    kn = sum_k(n)
    abs_db = np.abs(g).sum(axis=ax, keepdims=True)
    abs_dw = np.abs(g * xhat).sum(axis=ax, keepdims=True)
    db_b = es * kn * abs_db
    dw_b = es * kn * abs_dw + es * 4 * np.abs(mu) * inv * np.abs(g).sum(axis=ax, keepdims=True)
    tiny = float(np.finfo(xa.dtype).smallest_subnormal)
    if training:
        sdb = np.abs(g.sum(axis=ax, keepdims=True))
        sdw = np.abs((g * xhat).sum(axis=ax, keepdims=True))
        terms = (np.abs(g) + sdb / n + (np.abs(xhat) + (np.abs(xd) + np.abs(mu)) * inv) * sdw / n)
        dx_b = (eo * np.abs(dx_ref) + 4 * es * w * inv * terms
                + w * inv / n * (db_b + np.abs(xhat) * dw_b) + tiny)
    else:
        dx_b = eo * np.abs(dx_ref) + 4 * es * w * inv * np.abs(g) + tiny
    sshape = stat_shape(xd.shape, ax)
    return dx_b, dw_b.reshape(sshape), db_b.reshape(sshape)


# ----------------------------------------------------------------- backends
class Backend:
    """One backend as the tests see it: ``put`` turns a NumPy array into
    that backend's array type (same shape, strides and gaps), ``get`` brings
    a result back as NumPy; ``small`` is true where the work must stay tiny
    (the CUDA simulator runs every GPU thread in Python, about a second per
    call), and then ``fit`` shrinks shapes and ``sample`` thins sweeps."""

    def __init__(self, name):
        self.name = name
        self.small = False
        if name == "cuda":
            cuda = pytest.importorskip("numba.cuda")
            from numba import config
            self.small = bool(config.ENABLE_CUDASIM)
            if not self.small and not cuda.is_available():
                pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set")

    def fit(self, shape, limit=400):
        """``shape``, or on a ``small`` backend ``shape`` with its largest
        sizes halved until it holds at most ``limit`` elements."""
        shape = list(shape)
        while self.small and np.prod(shape) > limit:
            d = int(np.argmax(shape))
            shape[d] = -(-shape[d] // 2)
        return tuple(shape)

    def sample(self, cases, keep, salt=0):
        """All of ``cases``, or on a ``small`` backend ``keep`` of them drawn
        without replacement by a generator seeded with ``salt`` (fixed per
        parametrization, different between them, so that together the
        parametrizations of one test cover different cases)."""
        cases = list(cases)
        if not self.small or len(cases) <= keep:
            return cases
        picked = np.random.default_rng(salt).choice(len(cases), keep, replace=False)
        return [cases[i] for i in sorted(picked)]

    def put(self, a):
        if self.name == "cpu" or a is None:
            return a
        from nbnorm._cuda.arrays import to_device_like
        return to_device_like(np.asarray(a))

    def get(self, a):
        return a.copy_to_host() if hasattr(a, "copy_to_host") else a

    def on(self, *arrays):
        """``put`` of each of ``arrays`` (None stays None)."""
        return [self.put(a) for a in arrays]

    def back(self, results):
        return [self.get(r) for r in results]

    def __repr__(self):
        return self.name


CPU = Backend("cpu")


def nbnorm_dispatchers(modules):
    """The Numba dispatchers of nbnorm's functions among the attributes of
    ``modules`` (a kernel's parallel and serial builds each; a function
    imported into several modules comes once per module)."""
    for module in modules:
        for value in vars(module).values():
            for d in (value, getattr(value, "parallel", None), getattr(value, "serial", None)):
                f = getattr(d, "py_func", None)
                if hasattr(d, "targetoptions") and f is not None \
                        and f.__module__.startswith("nbnorm"):
                    yield d
