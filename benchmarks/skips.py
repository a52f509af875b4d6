"""What can run here: optional libraries (imported on first use, preloaded
by asv's forkserver), the GPU, and the combinations of the grid that are
skipped (:func:`static_skips` for asv's ``skip_params``, :func:`require` and
:func:`skip` in ``setup``: asv records them as skipped, not failed).

``NBNORM_BENCH_IMPLS`` and ``NBNORM_BENCH_SIZES`` (comma-separated) narrow a
run, e.g. to nbnorm's own large cases when comparing two commits;
``NBNORM_BENCH_CUDA=0`` turns the CUDA benchmarks off.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import itertools
import os
import sys


def have(module):
    """Whether ``module`` is installed (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load(module):
    """Import ``module`` (``torch``, ``cupy``); returns it."""
    return importlib.import_module(module)


# torch, cupy and numba.cuda are imported on first use, so a process that runs
# one nbnorm benchmark (asv's default "spawn" launch method) does not pay for
# them.  Under asv's "forkserver" (asv.conf.json) the suite is imported once by
# the server and every benchmark process is forked from it: preload there.
if sys.argv[1:2] == ["run_server"]:      # asv's forkserver: import once, fork many
    import numba  # noqa: F401
    for _m in ("torch", "cupy"):
        if have(_m):
            try:
                load(_m)
            except Exception:  # a broken install: the benchmarks needing it fail later
                pass


def skip(reason):
    """Mark the current parameter combination as not run (asv: skipped)."""
    raise NotImplementedError(reason)


def large_ok(layout, dtype):
    """The subset of (layout, dtype) that also runs at the large size."""
    return dtype == "float32" or layout == "nchw"


def gpu_device_nodes():
    """Cheap test (no CUDA initialisation) for an NVIDIA GPU on this machine;
    ``NBNORM_BENCH_CUDA=0`` turns the CUDA benchmarks off."""
    if os.environ.get("NBNORM_BENCH_CUDA", "1") == "0":
        return False
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False   # simulator timings mean nothing
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def _only(name):
    """The values a comma-separated ``NBNORM_BENCH_<name>`` keeps (None: all)."""
    value = os.environ.get(f"NBNORM_BENCH_{name}", "")
    return tuple(v.strip() for v in value.split(",") if v.strip()) or None


def static_skip(layout=None, dtype=None, size=None, backend="cpu", impl="nbnorm", **_):
    """Why a combination cannot run here, decided without importing anything
    heavy (None: it can, as far as we know before trying).  ``NBNORM_BENCH_IMPLS``
    and ``NBNORM_BENCH_SIZES`` (comma-separated) narrow a run, e.g. to nbnorm's
    own large cases when comparing two commits."""
    for name, value in (("IMPLS", impl), ("SIZES", size)):
        kept = _only(name)
        if kept is not None and value is not None and value not in kept:
            return f"left out by NBNORM_BENCH_{name}={','.join(kept)}"
    if size == "large" and not large_ok(layout, dtype):
        return "the large size runs for float32 (every layout) and nchw (every dtype) only"
    if impl != "nbnorm" and size == "small" and dtype != "float32":
        return "peers run float32 only at the small size"
    if impl == "numpy" and backend != "cpu":
        return "numpy runs on the CPU only (cupy is its CUDA peer)"
    if impl == "cupy" and backend != "cuda":
        return "cupy runs on CUDA only (numpy is its CPU peer)"
    if impl in ("torch", "cupy") and not have(impl):
        return f"{impl} is not installed"
    if backend == "cuda" and not gpu_device_nodes():
        return "no CUDA GPU"
    return None


def static_skips(params, param_names, **fixed):
    """For asv's ``skip_params`` attribute: every combination of ``params`` that
    :func:`static_skip` rules out (``fixed`` gives the arguments that are not
    parameters).  asv skips them quietly, without running ``setup``."""
    return [combo for combo in itertools.product(*params)
            if static_skip(**fixed, **dict(zip(param_names, combo)))]


def require(impl, backend, layout=None, dtype=None, size=None):
    """Skip (``NotImplementedError``) unless ``impl`` can run on ``backend`` here."""
    reason = static_skip(layout, dtype, size, backend, impl)
    if reason:
        skip(reason)
    lib = load(impl) if impl in ("torch", "cupy") else None
    if backend == "cuda":
        if impl == "nbnorm":
            from numba import cuda
            if not cuda.is_available():
                skip("numba.cuda: no usable GPU")
        elif impl == "torch" and not lib.cuda.is_available():
            skip("torch: no usable GPU")
        elif impl == "cupy" and lib.cuda.runtime.getDeviceCount() < 1:
            skip("cupy: no usable GPU")
