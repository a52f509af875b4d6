"""Cost of a fresh process: ``import nbnorm`` and the first call of each operation.

``timeraw_*`` runs the returned code in a new interpreter (asv ``timeraw``;
the interpreter's own start-up is not counted).  ``setup`` runs the same
call in the benchmark process first, so Numba's on-disk kernel cache is
warm: the time is the imports (NumPy, nbnorm, Numba on first use), building
a small input and loading the cached kernels.  A
change that breaks or bypasses the cache shows up as a step of seconds
(JIT compilation).
"""
from .cases import OPS, Case

_CALLS = {
    "import": "",
    "moments": "nbnorm.moments(x, axis)",
    "batch_norm_forward": "nbnorm.batch_norm_forward(x, w, b, axis=axis)",
    "batch_norm_inference": "nbnorm.batch_norm_inference(x, m, v, w, b, axis=axis)",
    "batch_norm_backward": "nbnorm.batch_norm_backward(x, x, m, v, w, axis=axis)",
}
# the inputs of Case(op, "nchw", "float32", "small") (same kernel signatures)
_PRELUDE = """
import numpy as np
import nbnorm
axis = (0, 2, 3)
x = np.full((4, 32, 28, 28), 1.5, np.float32)
x[:, :, ::2] = 0.5
w, b, m, v = (np.full(32, c, np.float32) for c in (1.25, 0.125, 1.5, 0.25))
"""


class FirstCall:
    params = [["import"] + list(OPS)]
    param_names = ["op"]
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0

    def setup(self, op):
        if op != "import":
            Case(op, "nchw", "float32", "small")

    def timeraw_first_call(self, op):
        """Wall time, in a fresh interpreter, of: import NumPy and nbnorm, build a
        small float32 NCHW input, call the op once (``import``: import only)."""
        if op == "import":
            return "import nbnorm"
        return _PRELUDE + _CALLS[op]
