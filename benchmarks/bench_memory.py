"""Memory of the training forward and backward at the large size (CPU).

``peakmem_*`` report the process's peak resident memory (asv ``peakmem``:
``ru_maxrss``).  ``setup`` builds the inputs, runs the op once (compilation),
then resets the peak mark (Linux ``/proc/self/clear_refs``), so the value is

    process baseline (interpreter, NumPy, Numba, peers' libraries) + inputs + outputs

for nbnorm: forward ≈ baseline + x + y, backward ≈ baseline + dy + x + dx
(≈103 MB each).  A hidden full-size temporary adds another ≈103 MB step.
The peers show what the usual alternatives cost.  ``track_extra_memory``
isolates the part that belongs to one nbnorm call.
"""
import gc

from .cases import DTYPES, LAYOUTS, OPS, Case
from .memory import reset_peak_rss, rss_and_peak
from .skips import skip, static_skips

PEERS = ["nbnorm", "numpy", "torch"]


class _Peak:
    params = [LAYOUTS, DTYPES, PEERS]
    param_names = ["layout", "dtype", "impl"]
    skip_params = static_skips(params, param_names, size="large", backend="cpu")
    op = None

    def setup(self, layout, dtype, impl):
        self.case = Case(self.op, layout, dtype, "large", "cpu", impl)
        gc.collect()
        reset_peak_rss()


class PeakMemForward(_Peak):
    op = "batch_norm_forward"

    def peakmem_batch_norm_forward(self, layout, dtype, impl):
        """Peak RSS of one training forward (x in; y, mean, invstd out)."""
        self.case.run()


class PeakMemBackward(_Peak):
    op = "batch_norm_backward"

    def peakmem_batch_norm_backward(self, layout, dtype, impl):
        """Peak RSS of one training backward (dy, x in; dx, dweight, dbias out)."""
        self.case.run()


class ExtraMemory:
    params = [OPS, LAYOUTS, DTYPES]
    param_names = ["op", "layout", "dtype"]
    skip_params = static_skips(params, param_names, size="large", backend="cpu")
    timeout = 900

    def setup_cache(self):
        """Every combination in one process: the memory of each call is
        measured from the resident memory just before it."""
        extra = {}
        if not reset_peak_rss():
            return extra
        for op in OPS:
            for layout in LAYOUTS:
                for dtype in DTYPES:
                    if (op, layout, dtype) in self.skip_params:
                        continue
                    case = Case(op, layout, dtype, "large", "cpu", "nbnorm")
                    gc.collect()
                    reset_peak_rss()
                    before, _ = rss_and_peak()
                    result = case.run()
                    _, peak = rss_and_peak()
                    extra[op, layout, dtype] = (peak - before) / case.x.nbytes
                    del result, case
        return extra

    def setup(self, extra, op, layout, dtype):
        if (op, layout, dtype) not in extra:
            skip("/proc/self/clear_refs is not writable: cannot reset the peak RSS")

    def track_extra_memory(self, extra, op, layout, dtype):
        """Memory one nbnorm call adds at its peak (peak RSS during the call −
        RSS before it), in units of ``x.nbytes``: ≈ 1 for forward, inference
        and backward (the output), ≈ 0 for moments; each hidden full-size
        temporary adds 1."""
        return extra[op, layout, dtype]
    track_extra_memory.unit = "x-sized arrays"
