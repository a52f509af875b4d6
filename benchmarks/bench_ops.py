"""Wall time of each public operation, for nbnorm and for its peers.

Every class times one operation over the grid ``layout × dtype × size ×
backend × impl`` described in :mod:`.cases`: every layout and dtype at the
small (in-cache) size; the large (≈103 MB per array) size for every layout
in float32 and every dtype in nchw.  ``impl`` = ``nbnorm`` or a peer a user
would use instead (``numpy``/``torch`` on the CPU, ``cupy``/``torch`` on
CUDA).  Each call allocates its outputs, as a user's call does.  Inputs are
built and the operation is run once in ``setup`` (JIT compilation, kernel
cache loading, lazy library initialisation), so even ``asv run --quick``
times the kernel.  Combinations that cannot run here are skipped
(``skip_params``, or ``NotImplementedError`` in ``setup``).
"""
from .cases import BACKENDS, DTYPES, IMPLS, LAYOUTS, SIZES, Case
from .skips import static_skips


class _Op:
    params = [LAYOUTS, DTYPES, SIZES, BACKENDS, IMPLS]
    param_names = ["layout", "dtype", "size", "backend", "impl"]
    skip_params = static_skips(params, param_names)
    op = None

    def setup(self, layout, dtype, size, backend, impl):
        self.case = Case(self.op, layout, dtype, size, backend, impl)


class Moments(_Op):
    op = "moments"

    def time_moments(self, layout, dtype, size, backend, impl):
        """``mean, var = moments(x, axis)`` (numpy: ``x.mean``, ``x.var``;
        torch: ``torch.var_mean``)."""
        self.case.run()


class BatchNormForward(_Op):
    op = "batch_norm_forward"

    def time_batch_norm_forward(self, layout, dtype, size, backend, impl):
        """Training forward with weight and bias: ``y, mean, invstd``
        (torch: ``aten.native_batch_norm`` in training mode)."""
        self.case.run()


class BatchNormInference(_Op):
    op = "batch_norm_inference"

    def time_batch_norm_inference(self, layout, dtype, size, backend, impl):
        """Normalisation with given mean/var, weight and bias
        (torch: ``F.batch_norm(training=False)``)."""
        self.case.run()


class BatchNormBackward(_Op):
    op = "batch_norm_backward"

    def time_batch_norm_backward(self, layout, dtype, size, backend, impl):
        """Training backward with weight: ``dx, dweight, dbias``
        (torch: ``aten.native_batch_norm_backward``)."""
        self.case.run()
