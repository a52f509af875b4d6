"""``python -m nbnorm --compile`` builds Numba's cache ahead of time: every
build a first training step (and the family, channels-last, ``moments``)
uses is one that ``--compile`` made, and after it such a step compiles
nothing.  Then: results do not depend on which process compiled the kernels,
and what a fresh cache needs from the process (LLVM's 128-bit helpers)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

FIRST_STEP = """
import json
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
print(json.dumps(builds()))
"""

#: the CPU kernel builds a process holds (compiled or loaded from the cache)
BUILDS = f"""
import json, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from helpers import nbnorm_dispatchers
def builds():
    held = set()
    for d in nbnorm_dispatchers([m for n, m in list(sys.modules.items())
                                 if n.startswith("nbnorm.")]):
        kind = "parallel" if d.targetoptions.get("parallel") else "serial"
        f = d.py_func
        held.update(f"{{f.__module__}}.{{f.__qualname__}} {{kind}} {{sig}}" for sig in d.signatures)
    return sorted(held)
"""

COMPILE = """
import runpy, sys
sys.argv = ["nbnorm", "--compile", "--dtype", "float32"]
try:
    runpy.run_module("nbnorm", run_name="__main__", alter_sys=True)   # python -m nbnorm
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(builds()))
"""


def test_compile_builds_the_cache_for_a_first_training_step():
    """``--compile --dtype float32`` holds every build a first step uses,
    and a step after it compiles nothing.  Both run in the test run's Numba
    cache (shared with the other tests, so that ``--compile`` warms it for
    them); the first check does not depend on what else the cache holds."""
    build = subprocess.run([sys.executable, "-c", BUILDS + COMPILE], capture_output=True,
                           text=True, timeout=1200)
    assert build.returncode == 0 and "the cache is ready" in build.stdout, build.stderr[-3000:]
    first = subprocess.run([sys.executable, "-c", BUILDS + FIRST_STEP], capture_output=True,
                           text=True, timeout=300)
    assert "compiled 0" in first.stdout, first.stdout[:3000] + first.stderr[-3000:]
    made = set(json.loads(build.stdout.splitlines()[-1]))
    used = set(json.loads(first.stdout.splitlines()[-1]))
    assert len(used) > 20 and any(" parallel " in b for b in used)
    assert not used - made, sorted(used - made)


def test_without_the_cache_a_first_call_compiles(tmp_path):
    """The check above can fail: in a fresh cache directory a call compiles."""
    code = ("import numpy as np; from numba.core import event; import nbnorm\n"
            "with event.install_recorder('numba:compile') as rec:\n"
            "    nbnorm.moments(np.ones(10, np.float32))\n"
            "print('compiled', len(rec.buffer) // 2)")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert "compiled" in first.stdout and "compiled 0" not in first.stdout, first.stderr[-3000:]


RESULTS = """
import hashlib, json, sys
import numpy as np
import nbnorm
from nbnorm._cpu import _threads
cases = [((8, 16, 40, 40), (0, 2, 3), False), ((8, 16, 40, 40), (0, 2, 3), True),
         ((256, 1000), 0, False), ((300, 700), 1, False)]
bits = {}
with _threads.serial_if(sys.argv[1] == "serial"):
    for shape, axis, channels_last in cases:
        for dtype in map(np.dtype, sys.argv[2].split(",")):
            rng = np.random.default_rng(len(bits))
            x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            if channels_last:
                x, dy = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
                         for a in (x, dy))
            w = np.linspace(0.5, 2, x.shape[1]).astype(dtype) if axis != 1 else None
            y, mean, invstd = nbnorm.batch_norm_forward(x, w, axis=axis)
            outputs = (y, mean, invstd, *nbnorm.batch_norm_backward(dy, x, mean, invstd, w, axis=axis),
                       *nbnorm.moments(x, axis))
            for i, a in enumerate(outputs):
                if a is not None:
                    key = f"{shape}{axis}{channels_last}{np.dtype(dtype).name}[{i}]"
                    bits[key] = hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()
    x = (np.random.default_rng(9).standard_normal((8, 16, 40, 40)) * 3 + 100).astype(np.float32)
    dy = np.cos(x)
    family = {"layer": (nbnorm.layer_norm, nbnorm.layer_norm_backward, ()),
              "rms": (nbnorm.rms_norm, nbnorm.rms_norm_backward, ()),
              "group": (nbnorm.group_norm, nbnorm.group_norm_backward, (4,)),
              "instance": (nbnorm.instance_norm, nbnorm.instance_norm_backward, ())}
    for name, (forward, backward, groups) in family.items():
        y, *stats = forward(x, *groups)
        for i, a in enumerate((y, *stats, *backward(dy, x, *stats, *groups))):
            if a is not None:
                bits[f"{name}[{i}]"] = hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()
    x.flat[::7] = np.nan
    for i, a in enumerate(nbnorm.moments(x, (0, 2, 3), skipna=True)):
        bits[f"skipna[{i}]"] = hashlib.sha1(a.tobytes()).hexdigest()
# a callee compiled in this process: one build per argument *types* (Numba
# types an integer or boolean constant at a call site as a literal; a stride
# written as ``1`` in one kernel and as a variable in another would compile
# the callee twice: 33 such extra builds before the literals were removed)
import gc
from numba.core import types
from numba.core.registry import CPUDispatcher
callees, twice = 0, []
for d in gc.get_objects():
    # type(), not isinstance(): the heap may hold dead weak proxies
    if issubclass(type(d), CPUDispatcher) and str(d.py_func.__module__).startswith("nbnorm"):
        builds = [tuple(types.unliteral(a) for a in sig) for sig in d.signatures]
        callees += len(builds)
        if len(set(builds)) != len(builds):
            twice.append(d.py_func.__qualname__)
print(json.dumps({"callee builds": callees, "twice": twice}))
print(json.dumps(bits))
"""


def test_results_do_not_depend_on_which_process_compiled_the_kernels(tmp_path):
    """One fresh Numba cache and three processes: the first compiles the
    parallel builds, the second loads them, the third compiles the serial
    builds next to the first one's cache.  Every output (batch norm's forward,
    backward and moments in four layouts in float32 (and float64 in the
    ``long`` profile), the family's
    forwards and backwards, NaN-skipping moments) agrees to the bit (before
    the fast-math callees were inlined, batch norm's Σdy of the shapes
    reduced along contiguous runs did not).  The compiling process also
    checks that it compiled each callee once per argument types."""

    from conftest import profile_factor

    # float64 too in the long profile (it doubles the two compiles: ~80 s)
    dtypes = ["float32", "float64"] if profile_factor() >= 200 else ["float32"]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = {}
    for name, build in (("compiled", "parallel"), ("loaded", "parallel"),
                        ("serial next to loaded", "serial")):
        done = subprocess.run([sys.executable, "-c", RESULTS, build, ",".join(dtypes)],
                              capture_output=True,
                              text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads(done.stdout.splitlines()[-1])
        if name == "compiled":
            callees = json.loads(done.stdout.splitlines()[-2])
    assert callees["callee builds"] > 20 and not callees["twice"], callees
    first = runs.pop("compiled")
    assert len(first) > 4 * len(dtypes) * 8 + 4 * 3 + 2
    for name, bits in runs.items():
        differ = sorted(k for k in first if bits[k] != first[k])
        assert not differ, (name, differ)


CRASH_SEQUENCE = """
import numpy as np
import nbnorm
from nbnorm._cpu import _threads
x = (np.random.default_rng(0).standard_normal((64, 1000)) * 3 + 100).astype(np.float16)
y, rms = nbnorm.rms_norm(x)
nbnorm.rms_norm_backward(x, x, rms)
x.flat[::7] = np.nan
with _threads.serial_if(True):
    mean, var = nbnorm.moments(x, 0, skipna=True)
reference = np.nanmean(x.astype(np.float64), 0)
print("largest error", np.abs(mean - reference).max())
"""


def test_loops_with_128_bit_bounds_find_their_division_helper(tmp_path):
    """In a fresh cache this sequence compiles the channels-last
    ``moments`` serial build with loop bounds in 128-bit integers, which
    x86-64 code divides with libgcc's ``__udivti3``; unless nbnorm makes that
    helper known to Numba's JIT, the kernel calls address 0 (a segmentation
    fault)."""
    done = subprocess.run([sys.executable, "-c", CRASH_SEQUENCE], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert float(done.stdout.split()[-1]) < 1e-3, done.stdout
