"""Efficiency of nbnorm's kernels: effective GB/s and fraction of copy bandwidth.

Byte model (bytes a perfect kernel must move, statistics neglected; ``|x|``
= ``x.nbytes``, ≈103 MB at the large size used here):

- ``moments``: reads x once → ``|x|``;
- ``batch_norm_forward``: reads x, writes y → ``2·|x|`` (nbnorm fuses the
  statistics pass into the same read when a statistic's data fits in cache;
  where it cannot, x is read twice and the efficiency shows it);
- ``batch_norm_inference``: reads x, writes y → ``2·|x|``;
- ``batch_norm_backward``: reads dy and x, writes dx → ``3·|x|``.

Each op's time is the best of 5 calls with preallocated ``out=`` (no page
faults of fresh outputs).  The reference is the machine's copy bandwidth
measured in the same process (:func:`.timing.copy_bandwidth`, the one
definition of :mod:`nbnorm._bandwidth`, also ``python -m nbnorm``'s: the
best of 9 copies between two 128 MiB arrays on Numba's threads, counted as
2 × 128 MiB; a device-to-device copy on CUDA), so ``track_copy_fraction`` ≈ 1
means the kernel runs at memory speed, and the value stays comparable when
the machine's load changes.  (Until ``track_copy_fraction`` version 2 the
reference was a single-threaded ``np.copyto``.)

All combinations are measured in one process (``setup_cache``: copy
bandwidth, then each op), which loads each compiled kernel once; the
``track_*`` methods report the stored values.
"""
from .cases import BACKENDS, DTYPES, LAYOUTS, OPS, Case
from .skips import skip, static_skips
from .timing import best_time, copy_bandwidth


class Bandwidth:
    params = [OPS, LAYOUTS, DTYPES, BACKENDS]
    param_names = ["op", "layout", "dtype", "backend"]
    skip_params = static_skips(params, param_names, size="large")
    timeout = 900

    def setup_cache(self):
        gbps = {}
        for op in OPS:
            for layout in LAYOUTS:
                for dtype in DTYPES:
                    for backend in BACKENDS:
                        if (op, layout, dtype, backend) in self.skip_params:
                            continue
                        try:
                            case = Case(op, layout, dtype, "large", backend, "nbnorm", out=True)
                        except NotImplementedError:
                            continue
                        copy = copy_bandwidth(backend)
                        rate = case.nbytes / best_time(case.run, 5) / 1e9
                        gbps[op, layout, dtype, backend] = (rate, copy)
                        del case
        return gbps

    def setup(self, gbps, op, layout, dtype, backend):
        if (op, layout, dtype, backend) not in gbps:
            skip("not measurable here (see setup_cache)")

    def track_gbps(self, gbps, op, layout, dtype, backend):
        """Effective bandwidth of the op in GB/s (10⁹ B/s) by the byte model above."""
        return gbps[op, layout, dtype, backend][0]
    track_gbps.unit = "GB/s"

    def track_copy_fraction(self, gbps, op, layout, dtype, backend):
        """Effective bandwidth / copy bandwidth measured in the same process."""
        rate, copy = gbps[op, layout, dtype, backend]
        return rate / copy
    track_copy_fraction.unit = "fraction of copy bandwidth"
    # 2: the copy bandwidth is a copy on Numba's threads (nbnorm._bandwidth), no
    # longer a single-threaded np.copyto
    track_copy_fraction.version = "2"
