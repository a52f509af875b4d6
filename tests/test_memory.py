"""Memory hints of the CPU kernels (``nbnorm._cpu._memory``).

Outputs of ``_memory.STREAM_BYTES`` and more are written with streaming stores and
reductions prefetch their next block.  Neither may change a value: every
operation that writes an output gives bitwise the same results, streamed or
not, whatever the output's alignment (views starting 0–15 elements into a
buffer), the run length (below and above ``STREAM_RUN``), the dtype, and
in place (``out=x``).  And the hints are real: the compiled code holds a
non-temporal vector store, a store fence and prefetches.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

import nbnorm
from nbnorm._cpu import _memory, _ranges

# (shape, axis): fused NCHW (≥ 64 channels), the general paths, short runs
CASES = [((2, 64, 17, 19), (0, 2, 3)), ((3, 5, 300), (0, 2)), ((2, 64, 5, 7), (0, 2, 3)),
         ((4, 1000), 0), ((700, 3), 1)]
OPS = ["forward", "inference", "backward", "backward_frozen", "layer_norm"]


@contextmanager
def streaming(on):
    before = _memory.STREAM_BYTES
    _memory.STREAM_BYTES = 0 if on else None
    try:
        yield
    finally:
        _memory.STREAM_BYTES = before


def _view(shape, dtype, start):
    """A NaN-filled array of ``shape`` starting ``start`` elements into a buffer
    (NaN left in an output means an element was not written)."""
    size = int(np.prod(shape))
    return np.full(size + 16, np.nan, dtype)[start:start + size].reshape(shape)


def _run(op, x, dy, axis, out):
    """The outputs of ``op`` (``out`` written in place; statistics returned)."""
    stat = np.asarray(nbnorm.moments(x, axis)[0]).shape
    w = np.linspace(0.5, 1.5, int(np.prod(stat))).reshape(stat).astype(np.float32)
    b = np.linspace(-1, 1, w.size).reshape(stat).astype(np.float32)
    if op == "forward":
        return nbnorm.batch_norm_forward(x, w, b, axis=axis, out=out)[1:]
    if op == "inference":
        mean, var = nbnorm.moments(x, axis)
        return [nbnorm.batch_norm_inference(x, mean, var, w, b, axis=axis, out=out)]
    if op == "layer_norm":
        return nbnorm.layer_norm(x, axis=axis, out=out)[1:]
    _, mean, invstd = nbnorm.batch_norm_forward(x, w, b, axis=axis)
    return nbnorm.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, out=out,
                                      training=op == "backward")[1:]


@settings(max_examples=30)
@given(op=st.sampled_from(OPS), case=st.sampled_from(CASES),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       start=st.integers(0, 15), in_place=st.booleans(), seed=st.integers(0, 2**16))
def test_streamed_outputs_are_bitwise_the_normal_ones(op, case, dtype, start, in_place, seed):
    shape, axis = case
    rng = np.random.default_rng(seed)
    x0 = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    results = []
    for on in (False, True):
        x = _view(shape, dtype, start)
        x[...] = x0
        out = x if in_place and op in ("forward", "inference", "layer_norm") else _view(
            shape, dtype, (start + 5) % 16)
        with streaming(on):
            stats = _run(op, x, dy, axis, out)
        results.append([np.array(out)] + [np.asarray(s) for s in stats])
    for normal, streamed in zip(*results):
        np.testing.assert_array_equal(streamed, normal)
        assert not np.isnan(normal).any()


def test_stream_line_writes_the_scalar_formula_with_one_nontemporal_store():
    """One line, float32 data, float64 and float32 coefficients: the values of
    ``(u − cu)·ca + ((v − cv)·cb + cc)`` as Numba computes it per element, and
    the LLVM IR holds one non-temporal store."""
    @njit
    def lines(out, u, v, cu, ca, cv, cb, cc):
        for j in range(0, out.size, 16):
            _memory.stream_line(out, j, u, j, v, j, cu, ca, cv, cb, cc)
        _memory.store_fence()

    @njit
    def scalar(out, u, v, cu, ca, cv, cb, cc):
        for j in range(out.size):
            out[j] = (u[j] - cu) * ca + ((v[j] - cv) * cb + cc)

    rng = np.random.default_rng(1)
    buf = np.empty(64 + 16, np.float32)
    start = (-buf.ctypes.data % 64) // 4
    out = buf[start:start + 64]
    u, v = (rng.standard_normal(64).astype(np.float32) * 1e3 for _ in range(2))
    coef = (np.float64(0.1), np.float64(1 / 3), np.float32(0.7), np.float64(-2 / 7),
            np.float64(5.0))
    lines(out, u, v, *coef)
    ref = np.empty_like(out)
    scalar(ref, u, v, *coef)
    np.testing.assert_array_equal(out, ref)
    ir = lines.inspect_llvm(lines.signatures[0])
    assert "!nontemporal" in ir
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "llvm.x86.sse.sfence" in ir


def test_prefetch_is_compiled_and_changes_nothing():
    @njit
    def summed(x, rsz, rstr, to_l2):
        _ranges.prefetch_range(x, 0, rsz, rstr, 0, x.size, to_l2)
        return x.sum()

    x = np.arange(1000.0)
    for to_l2 in (False, True):
        assert summed(x, np.array([10, 100]), np.array([100, 1]), to_l2) == x.sum()
    ir = summed.inspect_llvm(summed.signatures[0])
    # both hints: read (0), into all levels (3) or into L2 (2), data cache (1)
    assert "i32 0, i32 3, i32 1)" in ir and "i32 0, i32 2, i32 1)" in ir


def test_only_large_outputs_stream():
    assert _memory.STREAM_BYTES == 32 << 20 or "NBNORM_STREAM_BYTES" in os.environ
    with streaming(True):
        _memory.STREAM_BYTES = 1 << 20
        assert not _memory.streamed(np.empty((1 << 17) - 1))
        assert _memory.streamed(np.empty(1 << 17))
    with streaming(False):
        assert not _memory.streamed(np.empty(1 << 17))


@pytest.mark.parametrize("env, expected", [("0", "None"), ("1000", "1000"),
                                           ("lots", "NBNORM_STREAM_BYTES: expected")])
def test_stream_threshold_from_the_environment(env, expected):
    code = "import nbnorm._cpu._memory as m; print(m.STREAM_BYTES)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "NBNORM_STREAM_BYTES": env})
    assert expected in run.stdout + run.stderr


def test_cache_sizes_are_read_from_sysfs(tmp_path):
    """The fused forward prefetches the next statistic only when two fit in
    L2; in-cache data (L3) with many short runs per statistic is not fused."""
    for i, (level, size) in enumerate([("1", "48K"), ("1", "32K"), ("2", "2048K"), ("3", "32M")]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "level").write_text(level + "\n")
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    assert _memory._l2_bytes(str(tmp_path)) == 2 << 20
    assert _memory._l3_bytes(str(tmp_path)) == 32 << 20
    (tmp_path / "index3" / "size").write_text("96M\n")
    assert _memory._l3_bytes(str(tmp_path)) == 96 << 20
    (tmp_path / "index2" / "size").write_text("garbage")
    assert _memory._l2_bytes(str(tmp_path)) == 1 << 20
    assert _memory._l2_bytes(str(tmp_path / "absent")) == 1 << 20
    assert _memory._l3_bytes(str(tmp_path / "absent")) == 32 << 20
