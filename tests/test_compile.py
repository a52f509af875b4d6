"""``python -m nbnorm --compile`` builds Numba's cache ahead of time: after
it, a new process's first training step (and the family, channels-last,
``moments``) compiles nothing.  Both processes use a fresh
``NUMBA_CACHE_DIR`` of their own (float32 only: about two minutes)."""
from __future__ import annotations

import os
import subprocess
import sys

FIRST_STEP = """
import numpy as np
from numba.core import event
import nbnorm
with event.install_recorder("numba:compile") as rec:
    x = np.random.default_rng(1).standard_normal((8, 32, 28, 28)).astype(np.float32)
    w, b = np.ones(32, np.float32), np.zeros(32, np.float32)
    y, m, inv = nbnorm.batch_norm_forward(x, w, b, axis=(0, 2, 3), running_mean=np.zeros(32),
                                          running_var=np.ones(32))
    nbnorm.batch_norm_backward(y, x, m, inv, w, axis=(0, 2, 3))
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    nbnorm.batch_norm_forward(xl, axis=(0, 2, 3))
    nbnorm.layer_norm_backward(x, x, *nbnorm.layer_norm(x)[1:])
    nbnorm.group_norm(x, 8)
    nbnorm.moments(np.random.rand(1000, 300).astype(np.float32), 0)
print("compiled", len(rec.buffer) // 2)
"""


def test_compile_builds_the_cache_for_a_first_training_step(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    build = subprocess.run([sys.executable, "-m", "nbnorm", "--compile", "--dtype", "float32"],
                           capture_output=True, text=True, timeout=1200, env=env)
    assert build.returncode == 0 and "the cache is ready" in build.stdout, build.stderr[-3000:]
    first = subprocess.run([sys.executable, "-c", FIRST_STEP], capture_output=True, text=True,
                           timeout=300, env=env)
    assert "compiled 0" in first.stdout, first.stdout + first.stderr[-3000:]


def test_without_the_cache_a_first_call_compiles(tmp_path):
    """The check above can fail: in a fresh cache directory a call compiles."""
    code = ("import numpy as np; from numba.core import event; import nbnorm\n"
            "with event.install_recorder('numba:compile') as rec:\n"
            "    nbnorm.moments(np.ones(10, np.float32))\n"
            "print('compiled', len(rec.buffer) // 2)")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert "compiled" in first.stdout and "compiled 0" not in first.stdout, first.stderr[-3000:]
