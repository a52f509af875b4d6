"""Speed as a user calls it: every call allocating its outputs (``alloc``)
beside a preallocated ``out=`` (``out``, kernel time only), on the large
float32 NCHW array (102.8 MB), statistics over (0, 2, 3).

``time_call`` is asv's timing of one call (asv keeps the median and the
interquartile range of its samples: the run-to-run spread);
``track_alloc_over_out`` is the median over 11 rounds, the two calls
alternating, of (allocating time) / (``out=`` time) — 1.0 means a fresh
output costs nothing (nbnorm's output pool keeps output pages mapped).
"""
import time

import numpy as np

from .common import BACKENDS, Case, skip, static_skips

OPS = ("batch_norm_forward", "batch_norm_inference", "batch_norm_backward")
ROUNDS = 11


def _case(op, output, backend):
    return Case(op, "nchw", "float32", "large", backend, out=output == "out")


class AsCalled:
    params = [list(OPS), ["alloc", "out"], list(BACKENDS)]
    param_names = ["op", "output", "backend"]
    skip_params = static_skips(params, param_names, layout="nchw", dtype="float32",
                               size="large")
    timeout = 600

    def setup(self, op, output, backend):
        try:
            self.case = _case(op, output, backend)
        except NotImplementedError as e:
            skip(str(e))

    def time_call(self, op, output, backend):
        """One call, outputs allocated (``alloc``) or preallocated (``out``)."""
        self.case.run()


class AllocOverOut:
    params = [list(OPS), list(BACKENDS)]
    param_names = ["op", "backend"]
    skip_params = static_skips(params, param_names, layout="nchw", dtype="float32",
                               size="large", output="alloc")
    timeout = 600

    def setup(self, op, backend):
        try:
            self.cases = [_case(op, output, backend) for output in ("alloc", "out")]
        except NotImplementedError as e:
            skip(str(e))

    def track_alloc_over_out(self, op, backend):
        """Median over rounds of (allocating call) / (``out=`` call)."""
        ratios = []
        for _ in range(ROUNDS):
            t = []
            for case in self.cases:
                t0 = time.perf_counter()
                case.run()
                t.append(time.perf_counter() - t0)
            ratios.append(t[0] / t[1])
        return float(np.median(ratios))
    track_alloc_over_out.unit = "ratio"
