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
    # what only large outputs reach (streaming stores) and data near float32's
    # top (float64 coefficients in the elementwise pass)
    from nbnorm._cpu import _memory
    _memory.STREAM_BYTES = 0
    y, m, inv = nbnorm.batch_norm_forward(x, w, b, axis=(0, 2, 3))
    nbnorm.batch_norm_backward(y, x, m, inv, w, axis=(0, 2, 3))
    big = np.array([0.0, 3e38] * 16, np.float32)
    nbnorm.batch_norm_inference(x + big[:, None, None], big, w, w, b, axis=(0, 2, 3))
    _memory.STREAM_BYTES = None
    nbnorm.batch_norm_inference(x + big[:, None, None], big, w, w, b, axis=(0, 2, 3))
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


def test_a_callee_has_one_build_per_argument_types():
    """Numba types an integer or boolean constant at a call site as a literal;
    a callee reached with a stride written out as ``1`` in one kernel and as
    a variable in another would be compiled twice (33 such extra builds in a
    forward, backward, layer norm, group norm and moments of both dtypes).
    Every CPU callee is compiled once per argument *types*."""
    import gc

    import numpy as np
    from numba.core import types
    from numba.core.registry import CPUDispatcher

    import nbnorm
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 5, 6)).astype(np.float32)
    y, m, inv = nbnorm.batch_norm_forward(x, axis=(0, 2, 3))
    nbnorm.batch_norm_backward(y, x, m, inv, axis=(0, 2, 3))
    nbnorm.layer_norm_backward(x, x, *nbnorm.layer_norm(x)[1:])
    nbnorm.group_norm(x, 4)
    nbnorm.moments(x, (0, 2, 3))
    seen = 0
    for d in gc.get_objects():
        # type(), not isinstance(): the heap holds weak proxies (PyTorch's),
        # and isinstance() on a dead one raises ReferenceError
        if not (issubclass(type(d), CPUDispatcher)
                and str(d.py_func.__module__).startswith("nbnorm")):
            continue
        builds = [tuple(types.unliteral(a) for a in sig) for sig in d.signatures]
        seen += len(builds)
        assert len(set(builds)) == len(builds), (d.py_func.__qualname__, d.signatures)
    assert seen > 20      # the check looked at the kernels' callees
