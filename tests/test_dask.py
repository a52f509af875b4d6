"""The Dask backend against the NumPy path on the same data.

Lazy in, lazy out: every function returns Dask arrays without computing
(counted with a scheduler that counts its calls), except the training
forward's running statistics (exactly one compute).  Chunkings along kept
and reduced axes (uneven, single-chunk), axes as ints, tuples, None and
negative values, float32/float64, NumPy and Dask weight/bias; on the
synchronous, threaded and a two-process distributed scheduler.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402
import dask.local  # noqa: E402
import dask.threaded  # noqa: E402

import nbnorm  # noqa: E402
from nbnorm import _router  # noqa: E402

from exact import exact_moments, relative_error  # noqa: E402

SHAPE = (8, 6, 10, 12)
CHUNKINGS = {
    "single": SHAPE,
    "even": (4, 3, 5, 6),
    "uneven": ((1, 7), (2, 3, 1), (10,), (5, 5, 2)),
    "fine": (3, 4, 3, 7),
}
AXES = [(0, 2, 3), 1, (1, 3), -1, None, (0, -1), (2, 0)]


class Counting:
    """A scheduler that counts how often it is asked to compute."""

    def __init__(self, inner=dask.local.get_sync):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def data(dtype=np.float32, seed=0, shape=SHAPE, offset=5.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3 + offset).astype(dtype)


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if np.dtype(dtype) != np.float64 else dict(rtol=1e-12,
                                                                               atol=1e-12)


def stat_shape(axis, shape=SHAPE):
    ax = tuple(range(len(shape))) if axis is None else tuple(
        a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,)))
    return tuple(s for d, s in enumerate(shape) if d not in ax)


# ------------------------------------------------------------------ schedulers
@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    try:
        cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0")
        client = distributed.Client(cl, set_as_default=False)
    except Exception as e:  # no sockets, no processes: skip, do not fail
        pytest.skip(f"distributed.LocalCluster could not start here: {type(e).__name__}: {e}")
    yield client
    client.close()
    cl.close()


@pytest.fixture(params=["sync", "threads", "distributed"])
def scheduler(request):
    if request.param == "distributed":
        client = request.getfixturevalue("cluster")
        with dask.config.set(scheduler=client):
            yield request.param
    else:
        with dask.config.set(scheduler=request.param):
            yield request.param


# ------------------------------------------------------------------ router
def test_router_does_not_import_dask():
    code = ("import sys, numpy as np, nbnorm\n"
            "nbnorm.moments(np.ones((4, 3)), 0)\n"
            "print('dask' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "False"


def test_router_mixing_rule():
    x = da.ones((4, 3), chunks=2)
    backend, conv = _router.dispatch(x=x, weight=np.ones(3))
    assert backend.name == "dask" and isinstance(conv["weight"], np.ndarray)
    backend, _ = _router.dispatch(x=np.ones((4, 3)), weight=da.ones(3))  # owner found later
    assert backend.name == "dask"
    backend, _ = _router.dispatch(x=np.ones((4, 3)), weight=[1.0, 2.0, 3.0])
    assert backend.name == "cpu"


def test_router_other_mixes_still_raise():
    class FakeDevice:  # claimed by the cuda backend; conversion is never reached
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False),
                                    "version": 3}
    with pytest.raises(TypeError, match=r"weight is a cuda array .* but x is a cpu array "
                                        r".*pass every array argument on the same device"):
        _router.dispatch(x=np.ones((4, 3)), weight=FakeDevice())
    with pytest.raises(TypeError, match=r"weight is a cuda array .* but x is a dask array"):
        _router.dispatch(x=da.ones((4, 3)), weight=FakeDevice())


# ------------------------------------------------------------------ moments
@pytest.mark.parametrize("chunks", list(CHUNKINGS))
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_every_axis_and_chunking(axis, chunks, dtype):
    x = data(dtype)
    xd = da.from_array(x, chunks=CHUNKINGS[chunks])
    counting = Counting()
    with dask.config.set(scheduler=counting):
        mean, var = nbnorm.moments(xd, axis, ddof=1)
        assert counting.calls == 0
        assert _router.is_dask_array(mean) and _router.is_dask_array(var)
        got_m, got_v = dask.compute(mean, var)
    assert counting.calls == 1
    want_m, want_v = nbnorm.moments(x, axis, ddof=1)
    assert got_m.dtype == want_m.dtype and got_m.shape == want_m.shape
    np.testing.assert_allclose(got_m, want_m, **tol(dtype))
    np.testing.assert_allclose(got_v, want_v, **tol(dtype))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(got_m, np.mean(x64, axis), **tol(dtype))
    np.testing.assert_allclose(got_v, np.var(x64, axis, ddof=1), **tol(dtype))


def test_moments_on_every_scheduler(scheduler):
    x = data(np.float64)
    xd = da.from_array(x, chunks=CHUNKINGS["uneven"])
    mean, var = nbnorm.moments(xd, (0, 2, 3))
    got_m, got_v = dask.compute(mean, var)
    np.testing.assert_allclose(got_m, np.mean(x, (0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(got_v, np.var(x, (0, 2, 3)), rtol=1e-13)


def test_moments_keepdims_int_input_and_ddof():
    x = np.arange(120).reshape(4, 5, 6) % 7
    xd = da.from_array(x, chunks=(3, 2, 4))
    mean, var = nbnorm.moments(xd, (0, 2), keepdims=True, ddof=1)
    assert mean.shape == (1, 5, 1) and mean.dtype == np.float64
    np.testing.assert_allclose(mean.compute(scheduler="sync"), x.mean((0, 2), keepdims=True))
    np.testing.assert_allclose(var.compute(scheduler="sync"),
                               x.var((0, 2), ddof=1, keepdims=True))


def test_moments_large_offset_no_cancellation():
    x = data(np.float64, offset=1e8)
    xd = da.from_array(x, chunks=(3, 2, 4, 5))
    _, var = nbnorm.moments(xd, (0, 2, 3))
    _, exact = exact_moments(x, (0, 2, 3))
    # chunk states carry compensated means, so the tree of merges keeps the
    # one-pass bound; E[x²] − E[x]² would lose every digit (1e16 vs 9)
    assert relative_error(var.compute(scheduler="sync"), exact) < 1e-14


def test_split_every_is_daskconfig():
    x = data(np.float64)
    xd = da.from_array(x, chunks=(1, 3, 2, 3))      # 8·5·4 = 160 chunks per statistic
    results, depths = [], []
    for se in (2, 27, 1000, {0: 8, 2: 2, 3: 4}):   # per reduced axis: 2, 3, 10, …
        with dask.config.set(split_every=se):
            mean, var = nbnorm.moments(xd, (0, 2, 3))
        tree = [v for k, v in var.dask.layers.items() if "nbnorm-moments-merge" in k]
        depths.append(len({key[0] for key in tree[0]}))     # one name per tree level
        results.append(np.concatenate(dask.compute(mean, var, scheduler="sync")))
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-14)
    assert depths[0] > depths[1] > depths[2]


def test_moments_skipna():
    x = data(np.float64)
    x[0, :, 0, :3] = np.nan
    xd = da.from_array(x, chunks=(3, 4, 5, 7))
    mean, var = nbnorm.moments(xd, (0, 2, 3), skipna=True)
    got_m, got_v = dask.compute(mean, var, scheduler="sync")
    np.testing.assert_allclose(got_m, np.nanmean(x, (0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(got_v, np.nanvar(x, (0, 2, 3)), rtol=1e-13)


# ------------------------------------------------------------------ Moments
@pytest.mark.parametrize("axis", [(0, 2, 3), None, -1])
def test_moments_state_of_dask(axis, scheduler):
    x = data(np.float32, seed=3)
    xd = da.from_array(x, chunks=CHUNKINGS["uneven"])
    st = nbnorm.Moments.of(xd, axis)
    assert st.backend == "dask" and st.shape == stat_shape(axis)
    var = st.var()
    assert _router.is_dask_array(var)
    want = nbnorm.Moments.of(x, axis)
    np.testing.assert_allclose(var.compute(), want.var(), rtol=1e-6)
    np.testing.assert_allclose(st.std(ddof=1).compute(), want.std(ddof=1), rtol=1e-6)
    np.testing.assert_array_equal(st.count.compute(), want.count)


def test_moments_state_merge_dask_with_dask():
    a, b = data(np.float64, seed=1), data(np.float64, seed=2, offset=-3)
    sa = nbnorm.Moments.of(da.from_array(a, chunks=(3, 4, 5, 7)), (0, 2, 3))
    sb = nbnorm.Moments.of(da.from_array(b, chunks=(5, 2, 10, 4)), (0, 2, 3))
    merged = sa.merge(sb)
    assert merged.backend == "dask"
    both = np.concatenate([a, b])
    count, mean, m2 = dask.compute(merged.count, merged.mean, merged.m2, scheduler="sync")
    np.testing.assert_array_equal(count, np.full(6, both.size // 6))
    np.testing.assert_allclose(mean, both.mean((0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(merged.var().compute(scheduler="sync"), both.var((0, 2, 3)),
                               rtol=1e-13)
    np.testing.assert_allclose((sa + sb).mean.compute(scheduler="sync"), mean, rtol=0)


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("chunks", list(CHUNKINGS))
@pytest.mark.parametrize("axis", [(0, 2, 3), 1, (1, 3), -1, (0, -1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params", ["none", "numpy", "dask"])
def test_forward_every_axis_and_chunking(axis, chunks, dtype, params):
    x = data(dtype)
    xd = da.from_array(x, chunks=CHUNKINGS[chunks])
    sshape = stat_shape(axis)
    rng = np.random.default_rng(7)
    w, b = (rng.standard_normal(sshape).astype(dtype) for _ in range(2))
    wd, bd = {"none": (None, None), "numpy": (w, b),
              "dask": (da.from_array(w, chunks=2), da.from_array(b, chunks=3))}[params]
    counting = Counting()
    with dask.config.set(scheduler=counting):
        y, mean, invstd = nbnorm.batch_norm_forward(xd, wd, bd, axis=axis)
        assert counting.calls == 0
        got = dask.compute(y, mean, invstd)
    want = nbnorm.batch_norm_forward(x, None if params == "none" else w,
                                     None if params == "none" else b, axis=axis)
    for g, v in zip(got, want):
        assert g.dtype == v.dtype and g.shape == v.shape
        np.testing.assert_allclose(g, v, **tol(dtype))


def test_every_op_on_every_scheduler(scheduler):
    x, dy = data(np.float32), data(np.float32, seed=5, offset=0)
    xd = da.from_array(x, chunks=CHUNKINGS["uneven"])
    dyd = da.from_array(dy, chunks=CHUNKINGS["fine"])
    w = np.linspace(0.5, 2, 6).astype(np.float32)
    b = np.linspace(-1, 1, 6).astype(np.float32)
    ax = (0, 2, 3)
    y, mean, invstd = nbnorm.batch_norm_forward(xd, w, b, axis=ax)
    yi = nbnorm.batch_norm_inference(xd, mean, 1 / invstd ** 2 - 1e-5, w, b, axis=ax)
    dx, dw, db = nbnorm.batch_norm_backward(dyd, xd, mean, invstd, w, axis=ax)
    got = dask.compute(y, mean, invstd, yi, dx, dw, db)
    wy, wm, wi = nbnorm.batch_norm_forward(x, w, b, axis=ax)
    wdx, wdw, wdb = nbnorm.batch_norm_backward(dy, x, wm, wi, w, axis=ax)
    for g, v in zip(got, (wy, wm, wi, wy, wdx, wdw, wdb)):
        np.testing.assert_allclose(g, v, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunks", ["single", "uneven"])
def test_forward_running_statistics_one_compute(chunks, scheduler):
    x = data(np.float32)
    xd = da.from_array(x, chunks=CHUNKINGS[chunks])
    rm, rv = np.full(6, 0.5), np.full(6, 2.0)
    wm, wv = rm.copy(), rv.copy()
    inner = dask.config.get("scheduler")
    inner = {"sync": dask.local.get_sync, "threads": dask.threaded.get}.get(inner) or inner.get
    counting = Counting(inner)
    with dask.config.set(scheduler=counting):
        y, mean, invstd = nbnorm.batch_norm_forward(xd, axis=(0, 2, 3), running_mean=rm,
                                                    running_var=rv, momentum=0.25)
        assert counting.calls == 1                        # mean and var: one compute
        assert _router.is_dask_array(y) and _router.is_dask_array(mean)
        got = dask.compute(y, mean, invstd)
        assert counting.calls == 2
    want = nbnorm.batch_norm_forward(x, axis=(0, 2, 3), running_mean=wm, running_var=wv,
                                     momentum=0.25)
    np.testing.assert_allclose(rm, wm, rtol=1e-6)
    np.testing.assert_allclose(rv, wv, rtol=1e-6)
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=2e-5, atol=2e-5)
    # y is built from the computed statistics: its graph does not reduce x again
    assert not any("nbnorm-moments" in k or "nbnorm-state" in k for k in y.dask.layers)


def test_forward_running_statistics_skip_non_finite():
    x = data(np.float64)
    x[0, 2, 0, 0] = np.nan
    xd = da.from_array(x, chunks=(3, 4, 5, 7))
    rm, rv = np.zeros(6), np.ones(6)
    with pytest.warns(RuntimeWarning, match="non-finite batch statistics"):
        nbnorm.batch_norm_forward(xd, axis=(0, 2, 3), running_mean=rm, running_var=rv)
    assert rm[2] == 0 and rv[2] == 1
    assert np.all(rm[[0, 1, 3, 4, 5]] != 0)


# ------------------------------------------------------------------ inference, backward
@pytest.mark.parametrize("chunks", list(CHUNKINGS))
@pytest.mark.parametrize("axis", [(0, 2, 3), (1, 3), -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference(axis, chunks, dtype):
    x = data(dtype)
    sshape = stat_shape(axis)
    rng = np.random.default_rng(2)
    mean, var, w, b = (rng.random(sshape).astype(dtype) + 0.5 for _ in range(4))
    xd = da.from_array(x, chunks=CHUNKINGS[chunks])
    counting = Counting()
    with dask.config.set(scheduler=counting):
        y = nbnorm.batch_norm_inference(xd, da.from_array(mean, chunks=2), var, w,
                                        da.from_array(b), axis=axis)
        assert counting.calls == 0
        got = y.compute()
    want = nbnorm.batch_norm_inference(x, mean, var, w, b, axis=axis)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, **tol(dtype))
    assert not any("nbnorm-moments" in k for k in y.dask.layers)     # no reduction


@pytest.mark.parametrize("chunks", list(CHUNKINGS))
@pytest.mark.parametrize("axis", [(0, 2, 3), 1, (1, 3), -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_backward(axis, chunks, dtype, training):
    x, dy = data(dtype), data(dtype, seed=9, offset=0.5)
    sshape = stat_shape(axis)
    mean, var = nbnorm.moments(x, axis)
    invstd = (1 / np.sqrt(var + 1e-5)).astype(var.dtype)
    w = np.linspace(0.5, 2, int(np.prod(sshape))).reshape(sshape).astype(dtype)
    xd = da.from_array(x, chunks=CHUNKINGS[chunks])
    dyd = da.from_array(dy, chunks=CHUNKINGS["even"])
    counting = Counting()
    with dask.config.set(scheduler=counting):
        res = nbnorm.batch_norm_backward(dyd, xd, da.from_array(mean), invstd, w, axis=axis,
                                         training=training)
        assert counting.calls == 0
        got = dask.compute(*res)
    want = nbnorm.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, training=training)
    scale = [np.abs(v).max() + 1 for v in want]
    for g, v, s in zip(got, want, scale):
        assert g.dtype == v.dtype and g.shape == v.shape
        np.testing.assert_allclose(g, v, rtol=tol(dtype)["rtol"], atol=tol(dtype)["atol"] * s)
    if not training:   # frozen statistics: dx does not depend on the reduction
        assert not any("nbnorm-backward" in k for k in res[0].dask.layers)


# ------------------------------------------------------------------ errors at call time
def test_out_is_refused():
    xd = da.ones((4, 3, 2), chunks=2)
    for out in (np.empty((4, 3, 2)), xd):
        with pytest.raises(TypeError, match=r"out: .*Dask arrays are immutable"):
            nbnorm.batch_norm_forward(xd, axis=(0, 2), out=out)
        with pytest.raises(TypeError, match=r"out: .*Dask arrays are immutable"):
            nbnorm.batch_norm_inference(xd, np.zeros(3), np.ones(3), axis=(0, 2), out=out)
        with pytest.raises(TypeError, match=r"out: .*Dask arrays are immutable"):
            nbnorm.batch_norm_backward(xd, xd, np.zeros(3), np.ones(3), axis=(0, 2), out=out)


def same_error(fn, *args, **kwargs):
    """``fn`` raises at call time on Dask input, with the NumPy path's message."""
    conv = lambda a: da.from_array(a, chunks=2) if isinstance(a, np.ndarray) and a.ndim > 1 \
        else a  # noqa: E731
    with pytest.raises(Exception) as want:
        fn(*args, **kwargs)
    counting = Counting()
    with dask.config.set(scheduler=counting):
        with pytest.raises(want.type) as got:
            fn(*(conv(a) for a in args), **kwargs)
    assert counting.calls == 0
    assert str(got.value) == str(want.value)
    return got.type


def test_validation_errors_at_call_time():
    x = data(np.float32, shape=(4, 3, 5))
    assert same_error(nbnorm.moments, x, 3) is nbnorm.AxisError
    assert same_error(nbnorm.batch_norm_forward, x, axis=(0, -4)) is nbnorm.AxisError
    assert same_error(nbnorm.batch_norm_forward, x, np.ones(4, np.float32),
                      axis=(0, 2)) is ValueError
    assert same_error(nbnorm.batch_norm_forward, x, axis=(0, 0)) is ValueError
    assert same_error(nbnorm.batch_norm_forward, x.astype(np.int32), axis=(0, 2)) is TypeError
    assert same_error(nbnorm.batch_norm_inference, x, np.zeros(3), np.ones(2),
                      axis=(0, 2)) is ValueError
    assert same_error(nbnorm.batch_norm_backward, x.astype(np.float64), x, np.zeros(3),
                      np.ones(3), axis=(0, 2)) is TypeError
    assert same_error(nbnorm.batch_norm_forward, x[:1, :, :1], axis=(0, 2)) is ValueError
    with pytest.raises(ValueError, match="weight: expected shape"):
        nbnorm.batch_norm_forward(da.from_array(x), da.ones(4), axis=(0, 2))
    with pytest.raises(ValueError, match="running_var: pass both or neither"):
        nbnorm.batch_norm_forward(da.from_array(x), axis=(0, 2), running_mean=np.zeros(3))
    with pytest.raises(TypeError, match="running_mean: expected a NumPy array"):
        nbnorm.batch_norm_forward(da.from_array(x), axis=(0, 2), running_mean=da.zeros(3),
                                  running_var=np.ones(3))


def test_deferred_dof_warning():
    """Whether a Dask state's count is too small is only known when computing."""
    xd = da.from_array(np.ones((1, 3)), chunks=1)
    st = nbnorm.Moments.of(xd, 0)
    var = st.var(ddof=1)
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):
        got = var.compute(scheduler="sync")
    assert np.isnan(got).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st.var(ddof=0).compute(scheduler="sync")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers import assert_within, moments_bound  # noqa: E402
from nbnorm import reference  # noqa: E402
from strategies import reduction_cases  # noqa: E402


@settings(max_examples=12)
@given(st.data())
def test_property_any_chunking_and_merge_tree_matches_the_reference(data):
    """Shapes × axes × strided layouts × dtypes × chunkings × split_every ×
    NaN masks: the Dask state equals the float64 reference state."""
    x, axis = data.draw(reduction_cases(allow_none=True, max_dims=4))
    x = np.array(x, copy=True)
    skipna = data.draw(st.booleans())
    if skipna:
        x[np.random.default_rng(data.draw(st.integers(0, 99))).random(x.shape) < 0.2] = np.nan
    chunks = tuple(data.draw(st.integers(1, s)) for s in x.shape)
    split_every = data.draw(st.sampled_from([2, 3, 4]))
    with dask.config.set(split_every=split_every):
        s = nbnorm.Moments.of(da.from_array(x, chunks=chunks), axis, skipna=skipna)
        count, mean, m2 = dask.compute(s.count, s.mean, s.m2, scheduler="sync")
    want_count, want_mean, want_m2 = reference.moment_state(x, axis, skipna=skipna)
    np.testing.assert_array_equal(count, want_count)
    with np.errstate(invalid="ignore", divide="ignore"):
        want_var = want_m2 / np.maximum(want_count, 1)
    finite = np.where(np.isnan(x), 0.0, x)
    mean_b, var_b = moments_bound(finite, axis, np.nan_to_num(want_mean), want_var)
    assert_within(mean, want_mean, 4 * mean_b, "mean")
    assert_within(m2 / np.maximum(count, 1), want_var, 4 * var_b, "m2/count")


@pytest.mark.cuda
def test_device_chunks_are_reduced_by_the_cuda_backend(monkeypatch):
    """Each chunk's state comes from the backend of the chunk's own type: a
    Dask array of CUDA device arrays (Numba's, on the simulator without a
    GPU) is reduced chunk by chunk by the CUDA kernels, then merged."""
    pytest.importorskip("numba.cuda")
    from nbnorm._cuda import backend as cuda_backend
    from nbnorm._cuda.backend import to_device_like
    calls = []
    original = cuda_backend.moment_state

    def spy(x, axis, skipna):
        calls.append(type(x).__name__)
        return original(x, axis, skipna)

    monkeypatch.setattr(cuda_backend, "moment_state", spy)
    x = data(np.float64, shape=(8, 3, 4), offset=1e4)
    x[1, 2, 3] = np.nan
    xd = da.from_array(x, chunks=(2, 3, 4)).map_blocks(to_device_like, meta=np.empty((0, 0, 0)))
    for skipna in (False, True):
        calls.clear()
        state = nbnorm.Moments.of(xd, (0, 2), skipna=skipna)
        count, mean, m2 = dask.compute(state.count, state.mean, state.m2, scheduler="sync")
        want = nbnorm.Moments.of(x, (0, 2), skipna=skipna)
        assert len(calls) == 4 and "ndarray" not in calls, calls
        np.testing.assert_array_equal(np.asarray(count), want.count)
        np.testing.assert_allclose(np.asarray(mean), want.mean, rtol=1e-14)
        np.testing.assert_allclose(np.asarray(m2), want.m2, rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("kind", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("training", [True, False])
def test_backward_chunks_run_on_their_own_backend(kind, training, monkeypatch):
    """The backward's two passes run chunk by chunk on the backend of the
    chunk's type (``backward_sums``, then ``backward_apply``): NumPy chunks
    on the CPU kernels, device chunks (Numba's, on the simulator without a
    GPU) on the CUDA kernels; the result is the NumPy call's."""
    from nbnorm import _router
    if kind == "cuda":
        pytest.importorskip("numba.cuda")
    be = _router.load(kind)
    calls = []
    for name in ("backward_sums", "backward_apply"):
        original = getattr(be, name)

        def spy(*args, _original=original, _name=name):
            calls.append((_name, type(args[0]).__name__))
            return _original(*args)
        monkeypatch.setattr(be, name, spy)
    x, dy = data(np.float64, shape=(8, 3, 4), offset=1e3), data(np.float64, shape=(8, 3, 4), seed=4)
    mean, var = nbnorm.moments(x, (0, 2))
    invstd = 1 / np.sqrt(var + 1e-5)
    w = np.array([0.5, 1.0, 2.0])
    xd, dyd = (da.from_array(a, chunks=(2, 3, 4)) for a in (x, dy))
    if kind == "cuda":
        from nbnorm._cuda.backend import to_device_like
        xd, dyd = (a.map_blocks(to_device_like, meta=np.empty((0, 0, 0))) for a in (xd, dyd))
    dx, dw, db = nbnorm.batch_norm_backward(dyd, xd, mean, invstd, w, axis=(0, 2),
                                            training=training)
    got = [np.asarray(v) if kind == "cpu" else np.asarray(v.copy_to_host()
                                                         if hasattr(v, "copy_to_host") else v)
           for v in dask.compute(dx, dw, db, scheduler="sync")]
    want = nbnorm.batch_norm_backward(dy, x, mean, invstd, w, axis=(0, 2), training=training)
    passes = {n for n, _ in calls}
    assert passes == {"backward_sums", "backward_apply"}   # dweight, dbias: sums either way
    assert all(t != "ndarray" for _, t in calls) if kind == "cuda" else \
        all(t == "ndarray" for _, t in calls), calls
    assert sum(n == "backward_apply" for n, _ in calls) == 4
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=1e-12, atol=1e-12 * (np.abs(v).max() + 1))
