"""Memory placement: every operation on operands flush against guard pages,
misaligned, reversed, with and without streaming stores (``memory_job.py``,
in a subprocess with a timeout: a stray read or write faults there instead of
reading a neighbour's memory), and a subset of the kernels with Numba's
bounds checks on (``NUMBA_BOUNDSCHECK=1``, in a cache directory of its own so
that checked and unchecked builds never mix)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _job(*args, env=None, timeout=900):
    run = subprocess.run([sys.executable, str(HERE / "memory_job.py"), *args], cwd=HERE,
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"exit {run.returncode}:\n{out[-3000:]}"
    cases = int(re.search(r"(\d+) cases, 0 failures", out).group(1))
    print(f"memory_job {' '.join(args)}: {cases} cases")
    return cases


@pytest.mark.parametrize("dtype", ["f2", "f4", "f8"])
def test_every_operation_against_guard_pages(dtype):
    assert _job("--dtypes", dtype) > 3000


def test_kernels_under_bounds_checks(tmp_path):
    ops = "moments_skipna,forward,inference,backward,layer_norm,group_norm_backward"
    _job("--quick", "--dtypes", "f4", "--ops", ops,
         env={"NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)})


def test_placement_helper_really_guards():
    """The guard pages are real: touching the byte after (or before) the
    array kills a child process."""
    code = ("import numpy as np, ctypes, guarded; a = guarded.place(np.ones(5, np.float32), "
            "'{side}', 0); p = guarded.address(a) + {delta}; "
            "print(ctypes.c_char.from_address(p).value)")
    for side, delta, dies in [("after", 20, True), ("after", 19, False), ("before", -1, True),
                              ("before", 0, False)]:
        run = subprocess.run([sys.executable, "-c", code.format(side=side, delta=delta)],
                             cwd=HERE, capture_output=True, timeout=60)
        assert (run.returncode != 0) == dies, (side, delta, run.stderr[-500:])


_LARGE = """
import numpy as np, nbnorm
for dtype in (np.float32, np.float64):
    shape = (2, 8, 1, (32 << 20) // (16 * np.dtype(dtype).itemsize) + 3)   # y: 32 MiB + a bit
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    want = nbnorm.batch_norm_forward(x, axis=(0, 2, 3))[0]
    buf = np.empty(x.nbytes + 64, np.uint8)
    for gap in (1, 2, 4, 12, 60):
        out = np.frombuffer(buf, np.uint8, x.nbytes, gap).view(dtype).reshape(shape)
        nbnorm.batch_norm_forward(x, axis=(0, 2, 3), out=out)
        assert np.array_equal(out, want), (dtype, gap)
        y, *_ = nbnorm.batch_norm_backward(want, x, *nbnorm.batch_norm_forward(x, axis=(0, 2, 3))[1:],
                                           axis=(0, 2, 3), out=out)
print("ok")
"""


def test_misaligned_large_output_streams():
    """A misaligned ``out`` at the real streaming size (32 MiB and up): the
    lines that cannot be aligned are written with normal stores, giving the
    aligned result's bits (this crashed the process)."""
    run = subprocess.run([sys.executable, "-c", _LARGE], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]
