"""Per-call work on the CUDA path, counted on the simulator: a repeated call
copies nothing between host and device, and launches no more kernels and
allocates no more device arrays than each operation needs today (the
bounds below are today's counts; lowering one is progress, raising one
fails)."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"),
    reason="counts the simulator's launches")]

#: operation → (kernel launches, device arrays allocated) of a repeated call
BOUNDS = {"moments": (2, 8), "forward": (5, 14), "forward_running": (7, 14),
          "inference": (6, 8), "backward": (6, 13), "layer_norm": (3, 12),
          "layer_norm_backward": (7, 16), "group_norm": (5, 14),
          "group_norm_backward": (8, 17)}


@pytest.fixture
def counted(monkeypatch):
    from numba import cuda
    from numba.cuda.simulator import kernel as SK
    from numba.cuda.simulator.cudadrv import devicearray as DA
    counts = dict.fromkeys(("launch", "to_device", "to_host", "device_array"), 0)

    def counting(name, fn, when=lambda *a: True):
        def wrapped(*args, **kwargs):
            if when(*args):
                counts[name] += 1
            return fn(*args, **kwargs)
        return wrapped
    # a kernel launch, not a device function nor a call from inside a kernel
    monkeypatch.setattr(SK.FakeCUDAKernel, "__call__", counting(
        "launch", SK.FakeCUDAKernel.__call__,
        lambda self, *a: not (self._device or SK._kernel_context)))
    monkeypatch.setattr(cuda, "to_device", counting("to_device", cuda.to_device))
    monkeypatch.setattr(cuda, "device_array", counting("device_array", cuda.device_array))
    monkeypatch.setattr(DA.FakeCUDAArray, "copy_to_host",
                        counting("to_host", DA.FakeCUDAArray.copy_to_host))
    return counts


def _ops():
    import nbnorm as nb
    from numba import cuda
    rng = np.random.default_rng(3)
    x, dy = (cuda.to_device(rng.standard_normal((4, 6, 3, 3)).astype(np.float32))
             for _ in range(2))
    w, b, rm, rv = (cuda.to_device(v.astype(np.float32)) for v in
                    (np.ones(6), np.zeros(6), np.zeros(6), np.ones(6)))
    ax, lax = (0, 2, 3), (1, 2, 3)
    _, m, i = nb.batch_norm_forward(x, w, b, axis=ax)
    _, lm, li = nb.layer_norm(x, axis=lax)
    _, gm, gi = nb.group_norm(x, 2, w, b)
    return {
        "moments": lambda: nb.moments(x, ax),
        "forward": lambda: nb.batch_norm_forward(x, w, b, axis=ax),
        "forward_running": lambda: nb.batch_norm_forward(x, w, b, axis=ax, running_mean=rm,
                                                         running_var=rv),
        "inference": lambda: nb.batch_norm_inference(x, rm, rv, w, b, axis=ax),
        "backward": lambda: nb.batch_norm_backward(dy, x, m, i, w, axis=ax),
        "layer_norm": lambda: nb.layer_norm(x, axis=lax),
        "layer_norm_backward": lambda: nb.layer_norm_backward(dy, x, lm, li, axis=lax),
        "group_norm": lambda: nb.group_norm(x, 2, w, b),
        "group_norm_backward": lambda: nb.group_norm_backward(dy, x, gm, gi, 2, w),
    }


@pytest.mark.parametrize("op", list(BOUNDS))
def test_a_repeated_call_copies_nothing_and_launches_at_most_todays_kernels(op, counted):
    call = _ops()[op]
    call()
    for k in counted:
        counted[k] = 0
    call()
    launches, arrays = BOUNDS[op]
    assert counted["to_device"] == 0 and counted["to_host"] == 0, counted
    assert 1 <= counted["launch"] <= launches, counted
    assert counted["device_array"] <= arrays, counted


def test_the_counter_counts(counted):
    """The check above can fail: a host copy and a launch are seen."""
    from numba import cuda

    @cuda.jit
    def k(a):
        a[0] = 1
    d = cuda.to_device(np.zeros(2))
    k[1, 1](d)
    d.copy_to_host()
    assert counted["launch"] == 1 and counted["to_device"] == 1 and counted["to_host"] == 1
