"""The size sweep in asv (see ``benchmarks/sweep.py`` for the table and the
plot): every operation on float32 arrays of 1 KB to 16 MB, nbnorm and
PyTorch CPU each timed as called (outputs allocated); the sizes above
(103 MB, 419 MB) are in ``sweep.py`` and, for batch norm, in the other
suites."""
from .skips import skip
from .sweep import NCHW, OPS, ROWS, _calls

SIZES = [s for s in NCHW if s not in ("103 MB", "419 MB")]


class Sweep:
    params = [list(OPS), SIZES, ["nbnorm", "torch"]]
    param_names = ["op", "size", "impl"]
    timeout = 300

    def setup(self, op, size, impl):
        try:
            import torch
        except ImportError:
            skip("PyTorch is not installed")
        table = ROWS if op in ("layer_norm", "layer_norm_backward", "rms_norm") else NCHW
        self.call = _calls(op, table[size], torch)[impl]
        self.call()

    def time_call(self, op, size, impl):
        """One call as a user makes it."""
        self.call()
