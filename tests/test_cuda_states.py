"""Moments states of CUDA arrays (simulator without a GPU): the same
statistics as the host path, merged on the device."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from nbnorm import Moments

from helpers import channels_last

cuda = pytest.importorskip("numba.cuda")
pytestmark = pytest.mark.cuda


def device(a):
    from nbnorm._cuda.backend import to_device_like
    return to_device_like(a)


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_state_of_device_array_matches_host(dtype, layout):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 3, 6, 5)) * 2 + 50).astype(dtype)
    if layout == "channels-last":
        x = channels_last(x)
    d = Moments.of(device(x), axis=(0, 2, 3))
    h = Moments.of(x, axis=(0, 2, 3))
    assert d.backend == "cuda" and d.shape == (3,)
    np.testing.assert_array_equal(host(d.count), h.count)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(host(d.mean), h.mean, rtol=tol)
    np.testing.assert_allclose(host(d.m2), h.m2, rtol=10 * tol)
    np.testing.assert_allclose(host(d.var(ddof=1)), h.var(ddof=1), rtol=10 * tol)
    np.testing.assert_allclose(host(d.std()), h.std(), rtol=10 * tol)


def test_device_states_merge_like_host_states():
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((k, 4)) * 3 + 1e4 for k in (5, 1, 7, 3)]
    acc = None
    for p in parts:
        s = Moments.of(device(p), axis=0)
        acc = s if acc is None else acc + s
    whole = np.concatenate(parts)
    np.testing.assert_array_equal(host(acc.count), np.full(4, 16))
    np.testing.assert_allclose(host(acc.mean), whole.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(host(acc.var()), whole.var(axis=0), rtol=1e-11)
    with pytest.raises(TypeError, match="self holds cuda arrays but other holds cpu arrays"):
        acc + Moments.of(whole, axis=0)
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):
        v = Moments.of(device(whole[:1]), axis=0).var(ddof=1)
    assert np.isnan(host(v)).all()


def test_skipna_states_of_device_arrays_merge_like_host_states():
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((k, 3)) + 1e3 for k in (6, 2, 9)]
    for p in parts:
        p[rng.random(p.shape) < 0.3] = np.nan
    acc = None
    for p in parts:
        s = Moments.of(device(p), axis=0, skipna=True)
        acc = s if acc is None else acc + s
    whole = np.concatenate(parts)
    np.testing.assert_array_equal(host(acc.count), (~np.isnan(whole)).sum(axis=0))
    np.testing.assert_allclose(host(acc.mean), np.nanmean(whole, axis=0), rtol=1e-14)
    np.testing.assert_allclose(host(acc.var()), np.nanvar(whole, axis=0), rtol=1e-11)


def test_device_state_pickles_through_the_host():
    s = Moments.of(device(np.arange(12.0).reshape(4, 3)), axis=0)
    t = pickle.loads(pickle.dumps(s))
    assert t.backend == "cuda"
    for a, b in ((t.count, s.count), (t.mean, s.mean), (t.m2, s.m2)):
        np.testing.assert_array_equal(host(a), host(b))
