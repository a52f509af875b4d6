"""What a layer adds to the functions it wraps: ``BatchNorm.__call__`` +
``backward`` against ``batch_norm_forward`` (with running statistics) +
``batch_norm_backward`` on the same float32 NCHW input.

``size``: ``small`` (8,32,28,28), overhead-bound; ``large`` (64,128,56,56),
103 MB per array.  ``impl``: ``layer`` or ``function``.  ``track_overhead_us``
reports the layer's own work per training step (forward + backward) in
microseconds (:func:`overhead_us`): a difference of two noisy ~0.6 ms
timings cannot resolve a few µs, so the wrapped functions are replaced by
instant ones and what remains is timed.

Run as a script for the hand measurement of the documentation
(``python -m benchmarks.bench_layers [--rounds 200]``).
"""
from __future__ import annotations

import time

import numpy as np

import nbnorm

SHAPES = {"small": (8, 32, 28, 28), "large": (64, 128, 56, 56)}
AXIS = (0, 2, 3)


def _inputs(size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPES[size], dtype=np.float32) + 1
    dy = rng.standard_normal(SHAPES[size], dtype=np.float32)
    return x, dy


class _Layer:
    def __init__(self, x, dy):
        self.bn = nbnorm.BatchNorm(x.shape[1])
        self.x, self.dy = x, dy

    def step(self):
        self.bn(self.x)
        return self.bn.backward(self.dy)


class _Function:
    def __init__(self, x, dy):
        c = x.shape[1]
        self.w, self.b = np.ones(c, np.float32), np.zeros(c, np.float32)
        self.rm, self.rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        self.x, self.dy = x, dy

    def step(self):
        _, mean, invstd = nbnorm.batch_norm_forward(self.x, self.w, self.b, axis=AXIS,
                                                    running_mean=self.rm, running_var=self.rv)
        return nbnorm.batch_norm_backward(self.dy, self.x, mean, invstd, self.w, axis=AXIS)


def overhead_us(size, rounds):
    """The layer's own work per training step (``__call__`` + ``backward``), in
    µs: the step timed with the wrapped functions replaced by ones that
    return their precomputed results at once — the Python the layer adds
    (argument checks, mode logic, saving, the running-statistics factor),
    exactly, without the kernels' run-to-run noise.  Median of ``rounds``."""
    from unittest import mock

    import nbnorm._layers as layers
    x, dy = _inputs(size)
    layer = _Layer(x, dy)
    fwd = nbnorm.batch_norm_forward(x, layer.bn.weight, layer.bn.bias, axis=AXIS)
    bwd = nbnorm.batch_norm_backward(dy, x, fwd[1], fwd[2], layer.bn.weight, axis=AXIS)
    with mock.patch.object(layers, "batch_norm_forward", lambda *a, **k: fwd), \
            mock.patch.object(layers, "batch_norm_backward", lambda *a, **k: bwd):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            layer.step()
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


class Layers:
    params = [["small", "large"], ["layer", "function"]]
    param_names = ["size", "impl"]

    def setup(self, size, impl):
        x, dy = _inputs(size)
        self.run = (_Layer if impl == "layer" else _Function)(x, dy)
        self.run.step()

    def time_train_step(self, size, impl):
        """Forward (running statistics updated) and backward."""
        self.run.step()


class LayerOverhead:
    params = [["small", "large"]]
    param_names = ["size"]
    unit = "us"

    def track_overhead_us(self, size):
        """The layer's own work per training step (µs), see :func:`overhead_us`."""
        return overhead_us(size, 2000)


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=200)
    a = p.parse_args()
    from nbnorm._bench import median_time
    for size in ("small", "large"):
        x, dy = _inputs(size)
        n = a.rounds if size == "small" else max(10, a.rounds // 10)
        t_f = median_time(_Function(x, dy).step, n) * 1e6
        t_l = median_time(_Layer(x, dy).step, n) * 1e6
        print(f"{size} {SHAPES[size]}: function step {t_f:.0f} us, layer step {t_l:.0f} us "
              f"(medians of {n}); the layer's own work {overhead_us(size, 2000):.1f} us per step")
