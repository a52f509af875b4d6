"""Mergeable states (:class:`nbnorm.Moments`): streaming, merge order,
exactness, the identity, pickling, immutability and errors; the checks that
take a ``backend`` run on the CPU and on CUDA (the simulator without a GPU)."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbnorm
from nbnorm import Moments

from helpers import channels_last


def batches(seed, n_batches, shape=(5, 3, 4, 4), loc=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * rng.uniform(0.5, 2) + loc).astype(dtype)
            for _ in range(n_batches)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_of_matches_numpy(backend, layout, dtype):
    x = batches(0, 1, (6, 3, 5, 7), loc=3.0, dtype=dtype)[0]
    if layout == "channels-last":
        x = channels_last(x)
    s = Moments.of(backend.put(x), axis=(0, 2, 3))
    assert s.shape == (3,) and s.backend == backend.name
    count, mean, m2 = map(backend.get, (s.count, s.mean, s.m2))
    np.testing.assert_array_equal(count, np.full(3, 6 * 5 * 7))
    assert count.dtype == np.int64 and mean.dtype == np.float64 and m2.dtype == np.float64
    xf = x.astype(np.float64)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(mean, xf.mean(axis=(0, 2, 3)), rtol=tol)
    np.testing.assert_allclose(m2, xf.var(axis=(0, 2, 3)) * 210, rtol=10 * tol)
    np.testing.assert_allclose(backend.get(s.var(ddof=1)), xf.var(axis=(0, 2, 3), ddof=1),
                               rtol=10 * tol)
    np.testing.assert_allclose(backend.get(s.std()), xf.std(axis=(0, 2, 3)), rtol=10 * tol)


@pytest.mark.parametrize("skipna", [False, True])
def test_streaming_equals_the_concatenation(backend, skipna):
    parts = batches(1, 12, loc=-7.0)
    if skipna:
        rng = np.random.default_rng(3)
        for p in parts:
            p[rng.random(p.shape) < 0.3] = np.nan
    acc = Moments.empty((3,)) if backend.name == "cpu" else None
    for b in parts:
        s = Moments.of(backend.put(b), axis=(0, 2, 3), skipna=skipna)
        acc = s if acc is None else acc + s
    whole = np.concatenate(parts)
    np.testing.assert_array_equal(backend.get(acc.count), (~np.isnan(whole)).sum(axis=(0, 2, 3)))
    np.testing.assert_allclose(backend.get(acc.mean), np.nanmean(whole, axis=(0, 2, 3)),
                               rtol=1e-14)
    np.testing.assert_allclose(backend.get(acc.var()), np.nanvar(whole, axis=(0, 2, 3)),
                               rtol=1e-13)


@pytest.mark.parametrize("backend", [pytest.param("cuda", marks=pytest.mark.cuda)],
                         indirect=True)
def test_states_of_different_backends_do_not_merge(backend):
    d = Moments.of(backend.put(np.ones((3, 2))), axis=0)
    with pytest.raises(TypeError, match="self holds cuda arrays but other holds cpu arrays"):
        d + Moments.of(np.ones((3, 2)), axis=0)


def test_device_state_pickles_and_keeps_its_backend(backend):
    s = Moments.of(backend.put(np.arange(12.0).reshape(4, 3)), axis=0)
    t = pickle.loads(pickle.dumps(s))
    assert t.backend == backend.name
    for a, b in ((t.count, s.count), (t.mean, s.mean), (t.m2, s.m2)):
        np.testing.assert_array_equal(backend.get(a), backend.get(b))


@settings(max_examples=30)
@given(st.data())
def test_any_merge_order_gives_the_same_statistics(data):
    n = data.draw(st.integers(2, 8))
    sizes = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    parts = [rng.standard_normal((k, 4)) * 3 + 100 for k in sizes]
    states = [Moments.of(p, axis=0) if p.shape[0] else Moments.empty((4,)) for p in parts]
    order = data.draw(st.permutations(range(n)))
    tree = list(states[i] for i in order)
    while len(tree) > 1:   # pairwise tree in a drawn order
        tree = [tree[i] + tree[i + 1] if i + 1 < len(tree) else tree[i]
                for i in range(0, len(tree), 2)]
    left = sum(states)
    whole = np.concatenate(parts)
    for s in (tree[0], left):
        np.testing.assert_array_equal(s.count, np.full(4, whole.shape[0]))
        if whole.shape[0]:
            np.testing.assert_allclose(s.mean, whole.mean(axis=0), rtol=1e-13)
            np.testing.assert_allclose(s.m2, whole.var(axis=0) * whole.shape[0],
                                       rtol=1e-11, atol=1e-11)


def test_ten_thousand_float32_batches_at_large_offset():
    """float32 batches at mean/std = 1e4, merged one by one: variance within
    1e-6 relative of the float64 variance of the same stored values."""
    rng = np.random.default_rng(2)
    acc = Moments.empty((2,))
    data = (1e4 + rng.standard_normal((10_000, 16, 2))).astype(np.float32)
    for b in data:
        acc = acc + Moments.of(b, axis=0)
    truth = data.astype(np.float64).reshape(-1, 2)
    truth_var = ((truth - truth.mean(axis=0)) ** 2).mean(axis=0)
    assert np.max(np.abs(acc.var() / truth_var - 1)) < 1e-6


def test_empty_is_the_identity():
    s = Moments.of(batches(3, 1)[0], axis=(0, 2, 3))
    e = Moments.empty(3)
    for t in (s + e, e + s):
        for got, want in zip((t.count, t.mean, t.m2), (s.count, s.mean, s.m2)):
            np.testing.assert_array_equal(got, want)
    assert (e.count == 0).all() and np.isnan(e.mean).all()


def test_var_with_too_few_values_is_nan_with_a_warning(backend):
    s = Moments.of(backend.put(np.array([[1.0, 2.0]])), axis=0)   # one value per statistic
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):
        v = backend.get(s.var(ddof=1))
    assert np.isnan(v).all()
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):
        assert np.isnan(Moments.empty(2).std()).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(backend.get(s.var()), [0.0, 0.0])


def test_states_pickle_and_stay_read_only():
    s = Moments.of(channels_last(batches(4, 1, (3, 4, 5, 6))[0]), axis=(0, 2, 3))
    t = pickle.loads(pickle.dumps(s))
    for got, want in zip((t.count, t.mean, t.m2), (s.count, s.mean, s.m2)):
        np.testing.assert_array_equal(got, want)
    for a in (t.count, t.mean, t.m2, s.mean):
        assert not a.flags.writeable
    with pytest.raises(AttributeError, match="immutable"):
        s.foo = 1
    with pytest.raises(ValueError):
        s.mean[0] = 1.0
    merged = s + t
    assert merged is not s and (s.count == t.count).all()


def test_merge_errors_name_both_sides():
    s = Moments.of(np.ones((4, 3)), axis=0)
    with pytest.raises(TypeError, match="other must be a Moments, got numpy.ndarray"):
        s.merge(np.ones(3))
    with pytest.raises(ValueError, match=r"self \(3,\), other \(2,\)"):
        s + Moments.empty((2,))
    with pytest.raises(TypeError, match="x: unsupported dtype complex128"):
        Moments.of(np.ones(3, complex))
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        Moments.empty(3, dtype=np.int32)
    with pytest.raises(nbnorm.AxisError):
        Moments.of(np.ones((2, 2)), axis=2)


def test_integer_input_is_promoted():
    x = np.arange(12).reshape(4, 3)
    s = Moments.of(x, axis=0)
    np.testing.assert_allclose(s.var(), x.var(axis=0), rtol=1e-15)


def test_merged_float64_states_keep_one_pass_exactness_at_1e8():
    """Means near 1e8 are carried with their rounding error, so a chain of
    merges gives the variance of the concatenation within 1e-14 (exact
    rational reference), as one pass over it does."""
    from exact import exact_moments, relative_error

    rng = np.random.default_rng(5)
    parts = [1e8 + rng.standard_normal((int(k), 2)) for k in rng.integers(1, 400, 60)]
    acc = Moments.empty(2)
    for p in parts:
        acc = acc + Moments.of(p, axis=0)
    whole = np.concatenate(parts)
    exact_mean, exact_var = exact_moments(whole, 0)
    assert relative_error(acc.var(), exact_var) < 1e-14
    assert relative_error(acc.mean, exact_mean) < 2.5e-16
    tree = [Moments.of(p, axis=0) for p in parts]
    while len(tree) > 1:
        tree = [sum(tree[i:i + 3]) for i in range(0, len(tree), 3)]
    assert relative_error(tree[0].var(), exact_var) < 1e-14
