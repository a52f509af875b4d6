"""The bounded pool of large CPU output buffers (nbnorm._pool): reuse once
an output dies, never while any view of it lives; bounded, releasable,
disabled by NBNORM_POOL_BYTES=0, empty in a forked child; outputs in the
input's memory order."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nbnorm
from nbnorm import _layout, _pool

from helpers import relayout

BIG = (1024, 4096)            # 16 MB float32: pooled


def _address(a):
    return a.__array_interface__["data"][0]


def test_a_dead_output_is_reused_and_a_live_view_keeps_its_block():
    x = np.random.default_rng(0).standard_normal(BIG, dtype=np.float32)
    y = nbnorm.layer_norm(x)[0]
    ref = y.copy()
    addr = _address(y)
    assert type(y) is np.ndarray and y.flags.writeable and not y.flags.owndata
    del y
    y2 = nbnorm.layer_norm(x)[0]
    assert _address(y2) == addr                        # the block came back
    np.testing.assert_array_equal(y2, ref)
    view = y2[::2]
    del y2
    y3 = nbnorm.layer_norm(2 * x)[0]                   # must not take the viewed block
    assert _address(y3) != addr
    np.testing.assert_array_equal(view, ref[::2])
    del y3, view


def test_live_outputs_never_share_a_block():
    x = np.random.default_rng(1).standard_normal(BIG, dtype=np.float32)
    ys = [nbnorm.layer_norm(x * (k + 1), axis=0)[0] for k in range(3)]
    refs = [R_layer(x * (k + 1)) for k in range(3)]
    assert len({_address(y) for y in ys}) == 3
    for y, r in zip(ys, refs):
        np.testing.assert_allclose(y, r, rtol=1e-4, atol=1e-4)


def R_layer(x):
    m = x.astype(np.float64).mean(axis=0)
    v = x.astype(np.float64).var(axis=0)
    return (x - m) / np.sqrt(v + 1e-5)


def test_outputs_are_skewed_against_4k_aliasing():
    x = np.ones(BIG, np.float32)
    y = nbnorm.layer_norm(x)[0]
    assert (_address(y) - _address(x)) % 4096 != 0


def test_bounded_and_released():
    x = np.ones(BIG, np.float32)
    prev = nbnorm.set_pool_limit(20 << 20)             # room for one 16 MB block
    try:
        ys = [nbnorm.rms_norm(x)[0] for _ in range(3)]
        del ys
        assert _pool._pool.idle_bytes <= 20 << 20
        block = -(-((16 << 20) + _pool.SKEW) // _pool.GRAIN) * _pool.GRAIN
        assert nbnorm.release_memory() == block
        assert _pool._pool.idle_bytes == 0 and nbnorm.release_memory() == 0
    finally:
        nbnorm.set_pool_limit(prev)


def _run(code, env=None):
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.strip()


def test_disabled_by_the_environment_and_bad_values_named():
    out = _run("""
        import numpy as np, nbnorm
        x = np.ones((1024, 4096), np.float32)
        y = nbnorm.layer_norm(x)[0]
        print(y.flags.owndata, nbnorm.release_memory())
    """, {"NBNORM_POOL_BYTES": "0"})
    assert out == "True 0"
    p = subprocess.run([sys.executable, "-c", "import nbnorm"], capture_output=True, text=True,
                       env=dict(os.environ, NBNORM_POOL_BYTES="lots",
                                PYTHONPATH=os.getcwd()), timeout=300)
    assert p.returncode != 0 and "NBNORM_POOL_BYTES" in p.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_a_forked_child_starts_with_an_empty_pool():
    out = _run("""
        import os, numpy as np, nbnorm
        from nbnorm import _layout, _pool
        y = nbnorm.layer_norm(np.ones((1024, 4096), np.float32))[0]
        del y
        before = _pool._pool.idle_bytes
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, str(_pool._pool.idle_bytes).encode()); os._exit(0)
        os.waitpid(pid, 0)
        print(before, os.read(r, 100).decode())
    """)
    before, child = out.split()
    assert int(before) > 0 and int(child) == 0


@settings(max_examples=40)
@given(st.data())
def test_outputs_keep_the_input_memory_order(data):
    nd = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.integers(1, 6)) for _ in range(nd))
    perm = tuple(data.draw(st.permutations(range(nd))))
    flip = tuple(d for d in range(nd) if data.draw(st.booleans()))
    x = relayout(np.zeros(shape, np.float32), perm=perm, flip=flip,
                 step=data.draw(st.integers(1, 2)))
    want = np.empty_like(x, order="K")
    got = _layout.dense_strides(x.shape, x.strides, x.dtype.itemsize)
    for d in range(nd):
        if x.shape[d] > 1:
            assert got[d] == want.strides[d], (x.shape, x.strides, got, want.strides)
