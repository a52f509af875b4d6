"""Dask arrays with unknown chunk sizes (issue 21, part 5).

Boolean indexing with a Dask mask (``x[m]``, ``x[:, m]``) leaves chunks of
unknown size (``np.nan``).  Along reduced axes every operation takes the
number of elements per statistic from the chunk states' counts, so the
results equal those of the NumPy path on ``x.compute()``: no NaN where that
has none, and no warning where that gives none.  Along kept axes the
statistics get unknown chunks too; Dask statistics chunked as ``x`` work,
what cannot be aligned raises ``ValueError`` at call time.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402
import dask.local  # noqa: E402

import nbnorm  # noqa: E402

SHAPE = (20, 3, 4, 4)
CHUNKS = (6, 2, 2, 4)          # axis 0: (6, 6, 6, 2); axis 1: (2, 1)
_rows = np.random.default_rng(11).random(20) < 0.5
ROWS = {                       # masks along axis 0 (its chunks: 0–5, 6–11, 12–17, 18–19)
    "half": _rows,
    "first_chunk_empty": _rows & (np.arange(20) >= 6) | (np.arange(20) == 19),
    "one_chunk_only": (np.arange(20) >= 12) & (np.arange(20) < 18),
    "empty": np.zeros(20, bool),
}
CHANNELS = {                   # masks along axis 1 (its chunks: 0–1, 2)
    "ends": np.array([True, False, True]),
    "first_chunk_empty": np.array([False, False, True]),
}
MASKS = [("half", None), ("first_chunk_empty", None), ("one_chunk_only", None), ("empty", None),
         (None, "ends"), (None, "first_chunk_empty"), ("half", "ends"),
         ("one_chunk_only", "first_chunk_empty")]
AXES = [(0, 2, 3), (1, 3), (0, 1)]
OPS = ["moments", "Moments.of", "forward", "forward_running", "inference", "backward_training",
       "backward_frozen"]


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return dask.local.get_sync(*args, **kwargs)


def select(a, dims, masks):
    """``a`` (whose axes are the original axes ``dims``) indexed with the
    Dask masks of those axes: unknown chunk sizes there."""
    for pos, d in enumerate(dims):
        if masks.get(d) is not None:
            m = da.from_array(masks[d], chunks=(a.chunks[pos],))
            a = a[(slice(None),) * pos + (m,)]
    return a


def build(axis, rows, channels, dtype=np.float64, seed=0):
    """``(dask inputs, NumPy inputs)`` of one case: x, dy, and statistic-shaped
    mean, var, invstd, weight, bias (Dask masked as x where a kept axis has
    unknown sizes, NumPy otherwise)."""
    rng = np.random.default_rng(seed)
    masks = {0: None if rows is None else ROWS[rows],
             1: None if channels is None else CHANNELS[channels]}
    x = (rng.standard_normal(SHAPE) * 3 + 5).astype(dtype)
    dy = (rng.standard_normal(SHAPE) + 0.5).astype(dtype)
    dims = tuple(range(len(SHAPE)))
    xd = da.from_array(x, chunks=CHUNKS)
    got = {"x": select(xd, dims, masks),
           "dy": select(da.from_array(dy, chunks=CHUNKS), dims, masks)}
    kept = [d for d in dims if d not in axis]
    sshape = tuple(SHAPE[d] for d in kept)
    unknown_kept = any(masks.get(d) is not None for d in kept)
    for name, lo in (("mean", 4.0), ("var", 0.5), ("invstd", 0.2), ("weight", 0.5),
                     ("bias", -1.0)):
        s = (rng.random(sshape) + lo).astype(dtype)
        if unknown_kept:
            s = select(da.from_array(s, chunks=tuple(xd.chunks[d] for d in kept)), kept, masks)
        got[name] = s
    want = dict(zip(got, dask.compute(*got.values(), scheduler="sync")))
    want = {k: np.asarray(v) for k, v in want.items()}
    return got, want, unknown_kept


def run(op, a, axis, running=None):
    """The operation's results as a tuple (Dask in: lazy arrays)."""
    if op == "moments":
        return nbnorm.moments(a["x"], axis, ddof=1)
    if op == "Moments.of":
        st = nbnorm.Moments.of(a["x"], axis)
        return st.count, st.mean, st.var(ddof=1)
    if op == "forward":
        return nbnorm.batch_norm_forward(a["x"], a["weight"], a["bias"], axis=axis)
    if op == "forward_running":
        return nbnorm.batch_norm_forward(a["x"], a["weight"], a["bias"], axis=axis,
                                         running_mean=running[0], running_var=running[1],
                                         momentum=0.3)
    if op == "inference":
        return (nbnorm.batch_norm_inference(a["x"], a["mean"], a["var"], a["weight"], a["bias"],
                                            axis=axis),)
    training = op == "backward_training"
    return nbnorm.batch_norm_backward(a["dy"], a["x"], a["mean"], a["invstd"], a["weight"],
                                      axis=axis, training=training)


def outcome(fn):
    """``(results or the exception, RuntimeWarnings)`` of ``fn()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except ValueError as e:
            result = e
    return result, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def compare(got, want, dtype=np.float64):
    rtol = 1e-10 if np.dtype(dtype) == np.float64 else 2e-5
    for g, v in zip(got, want):
        g = np.asarray(g)
        assert g.shape == v.shape and g.dtype == v.dtype
        if not np.isnan(v).any():
            assert not np.isnan(g).any()
        scale = np.abs(np.nan_to_num(v)).max(initial=0) + 1
        np.testing.assert_allclose(g, v, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("rows,channels", MASKS, ids=[f"{r}-{c}" for r, c in MASKS])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_unknown_chunks_match_numpy(op, axis, rows, channels):
    a, n, unknown_kept = build(axis, rows, channels)
    sshape = n["mean"].shape
    rm, rv = np.full(sshape, 0.5), np.full(sshape, 2.0)
    wm, wv = rm.copy(), rv.copy()

    if op == "forward_running" and unknown_kept:
        # NumPy running statistics cannot match statistics of unknown length
        with pytest.raises(ValueError):
            run(op, a, axis, (rm, rv))
        assert (rm == 0.5).all() and (rv == 2.0).all()
        return

    want, want_warned = outcome(lambda: run(op, n, axis, (wm, wv)))
    counting = Counting()

    def lazy():
        with dask.config.set(scheduler=counting):
            res = run(op, a, axis, (rm, rv))
            assert counting.calls == (1 if op == "forward_running" else 0)
            return dask.compute(*res)

    got, got_warned = outcome(lazy)
    # a warning (an empty reduction, too few degrees of freedom) exactly where NumPy warns
    assert bool(got_warned) == bool(want_warned), (got_warned, want_warned)
    if isinstance(want, ValueError):        # NumPy refuses (zero-size x, < 2 values)
        if isinstance(got, ValueError):
            assert (rm == 0.5).all() and (rv == 2.0).all()
            return
        # backward and empty kept axes: nothing to normalize, and no NaN either
        assert n["x"].size == 0 and op != "forward_running"
        for g in got:
            assert not np.isnan(g).any() and not np.any(g)
        return
    assert not isinstance(got, ValueError), got
    compare(got, want)
    if op == "forward_running":
        np.testing.assert_allclose(rm, wm, rtol=1e-12)
        np.testing.assert_allclose(rv, wv, rtol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_unknown_chunks_float32_forward_backward(training):
    a, n, _ = build((0, 2, 3), "half", "ends", dtype=np.float32, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, mean, invstd = nbnorm.batch_norm_forward(a["x"], axis=(0, 2, 3))
        res = nbnorm.batch_norm_backward(a["dy"], a["x"], mean, invstd, a["weight"],
                                         axis=(0, 2, 3), training=training)
        got = dask.compute(y, mean, invstd, *res, scheduler="sync")
    wy, wmean, winv = nbnorm.batch_norm_forward(n["x"], axis=(0, 2, 3))
    want = (wy, wmean, winv, *nbnorm.batch_norm_backward(n["dy"], n["x"], wmean, winv,
                                                         n["weight"], axis=(0, 2, 3),
                                                         training=training))
    compare(got, want, np.float32)


def test_running_statistics_no_misleading_warning():
    """The unbiased factor n/(n − 1) comes from the counts: no 'non-finite
    batch statistics' warning, and running_var is updated."""
    a, n, _ = build((0, 2, 3), "half", None)
    rm, rv = np.zeros(3), np.ones(3)
    wm, wv = rm.copy(), rv.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nbnorm.batch_norm_forward(a["x"], axis=(0, 2, 3), running_mean=rm, running_var=rv)
    nbnorm.batch_norm_forward(n["x"], axis=(0, 2, 3), running_mean=wm, running_var=wv)
    assert np.all(rv != 1)
    np.testing.assert_allclose(rm, wm, rtol=1e-13)
    np.testing.assert_allclose(rv, wv, rtol=1e-13)


def test_too_few_values_for_training():
    """Fewer than 2 values per statistic: the NumPy path refuses at call time;
    with unknown sizes the lazy forward refuses when computing, the forward
    with running statistics (which computes) at call time."""
    x = np.arange(12.0).reshape(4, 3)
    xd = da.from_array(x, chunks=2)
    one = xd[da.from_array(np.array([False, False, True, False]), chunks=2)]
    with pytest.raises(ValueError, match="more than 1 value per statistic"):
        nbnorm.batch_norm_forward(x[2:3], axis=0)
    y, mean, invstd = nbnorm.batch_norm_forward(one, axis=0)
    for r in (y, mean, invstd):
        with pytest.raises(ValueError, match=r"got 1 .*compute_chunk_sizes\(\)"):
            r.compute(scheduler="sync")
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match=r"got 1 .*compute_chunk_sizes\(\)"):
        nbnorm.batch_norm_forward(one, axis=0, running_mean=rm, running_var=rv)
    assert (rm == 0).all() and (rv == 1).all()


def test_moments_keepdims_and_ddof_from_counts():
    a, n, _ = build((0, 2, 3), "first_chunk_empty", None)
    for ddof in (0, 1, 2.5):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = dask.compute(*nbnorm.moments(a["x"], (0, 2, 3), ddof=ddof, keepdims=True),
                               scheduler="sync")
        want = nbnorm.moments(n["x"], (0, 2, 3), ddof=ddof, keepdims=True)
        compare(got, want)


def test_moments_states_merge_with_unknown_kept_chunks():
    a, n, _ = build((0, 2, 3), "half", "ends")
    b, m, _ = build((0, 2, 3), "one_chunk_only", "ends", seed=1)
    st = nbnorm.Moments.of(a["x"], (0, 2, 3)) + nbnorm.Moments.of(b["x"], (0, 2, 3))
    got = dask.compute(st.count, st.mean, st.var(), scheduler="sync")
    both = nbnorm.Moments.of(np.concatenate([n["x"], m["x"]]), (0, 2, 3))
    compare(got, (both.count, both.mean, both.var()))


# ------------------------------------------------------------------ what cannot work
def test_unalignable_chunks_raise_at_call_time():
    """Chunks of unknown size cannot be rechunked: arguments chunked otherwise
    than x there are refused when calling, naming compute_chunk_sizes()."""
    a, n, _ = build((0, 2, 3), "half", "ends")
    x = a["x"]
    counting = Counting()
    with dask.config.set(scheduler=counting):
        other = da.from_array(np.ones((20, 3, 4, 4)), chunks=(5, 3, 4, 4))
        dy = other[da.from_array(ROWS["half"], chunks=5)][:, da.from_array(CHANNELS["ends"],
                                                                           chunks=3)]
        with pytest.raises(ValueError, match=r"dy: .*compute_chunk_sizes\(\)"):
            nbnorm.batch_norm_backward(dy, x, a["mean"], a["invstd"], axis=(0, 2, 3))
        mean = dy.mean(axis=(0, 2, 3))            # (nan,) in one chunk; x has two
        with pytest.raises(ValueError, match=r"mean: .*compute_chunk_sizes\(\)"):
            nbnorm.batch_norm_inference(x, mean, a["var"], axis=(0, 2, 3))
        with pytest.raises(ValueError, match=r"invstd: .*compute_chunk_sizes\(\)"):
            nbnorm.batch_norm_backward(a["dy"], x, a["mean"], mean, axis=(0, 2, 3))
    assert counting.calls == 0


def test_numpy_statistics_with_unknown_kept_sizes_are_refused():
    a, n, _ = build((0, 2, 3), None, "ends")
    for fn in (lambda: nbnorm.batch_norm_forward(a["x"], np.ones(2), axis=(0, 2, 3)),
               lambda: nbnorm.batch_norm_inference(a["x"], np.zeros(2), np.ones(2),
                                                   axis=(0, 2, 3))):
        with pytest.raises(ValueError):
            fn()


def test_chunk_sizes_that_differ_only_when_computed():
    """Same block grid, other sizes (other masks): found when computing, with
    a ValueError, never broadcast into a wrong result."""
    a, _, _ = build((0, 2, 3), "half", None)
    b, _, _ = build((0, 2, 3), "one_chunk_only", None)
    dx, dw, db = nbnorm.batch_norm_backward(b["dy"], a["x"], a["mean"], a["invstd"],
                                            axis=(0, 2, 3))
    for r in (dx, dw, db):
        with pytest.raises(ValueError, match=r"dy: a chunk .*compute_chunk_sizes\(\)"):
            r.compute(scheduler="sync")
    c, _, _ = build((0, 2, 3), "half", "ends")
    d, _, _ = build((0, 2, 3), "half", "first_chunk_empty")
    y = nbnorm.batch_norm_inference(c["x"], d["mean"], d["var"], axis=(0, 2, 3))
    with pytest.raises(ValueError, match=r"chunk of the statistics .*compute_chunk_sizes\(\)"):
        y.compute(scheduler="sync")
    st = nbnorm.Moments.of(c["x"], (0, 2, 3)) + nbnorm.Moments.of(d["x"], (0, 2, 3))
    with pytest.raises(ValueError, match=r"Moments.merge: .*compute_chunk_sizes\(\)"):
        st.mean.compute(scheduler="sync")
