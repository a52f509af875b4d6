"""Build Numba's on-disk cache of the CPU kernels ahead of time
(``python -m nbnorm --compile``), for container images and clusters whose
processes should start computing at once.

Every kernel is compiled on its first call with a new type signature (the
dtype, whether optional operands are present, the parallel or the serial
build) and then kept in Numba's cache (``__pycache__`` beside the package,
or ``NUMBA_CACHE_DIR``).  :func:`compile_all` makes the calls that reach
every build the public functions use: each operation on NCHW and
channels-last data, fused and not, small (serial build) and at the parallel
size, with and without parameters, running statistics, ``skipna`` and
``out=x``, and the builds with streaming stores and with float64
coefficients that only large outputs and extreme data reach
(:func:`_rare_builds`).  A later process loads these instead of compiling.
"""
from __future__ import annotations

import time

import numpy as np

#: (N, C, H, W): fused (≥ 64 channels) and not, below and at the parallel size
SHAPES = [(2, 64, 2, 3), (3, 5, 7, 2), (2, 64, 32, 32), (64, 8, 16, 16)]
BN = (0, 2, 3)


def _calls(x):
    """The public calls on ``x`` (NCHW view) that reach every kernel build."""
    import nbnorm

    c = x.shape[1]
    w = np.linspace(0.5, 1.5, c)
    b = np.linspace(-1, 1, c)
    dy = x * 0.5
    mean, var = nbnorm.moments(x, BN)
    nbnorm.moments(x, BN, skipna=True)
    state = nbnorm.Moments.of(x, BN)
    state.merge(nbnorm.Moments.of(x, BN, skipna=True)).var()
    _, m, inv = nbnorm.batch_norm_forward(x, w, b, axis=BN, running_mean=np.zeros(c),
                                          running_var=np.ones(c))
    y = x.copy(order="K")
    nbnorm.batch_norm_forward(y, axis=BN, out=y)
    nbnorm.batch_norm_inference(x, mean, var, w, b, axis=BN)
    for training in (True, False):
        nbnorm.batch_norm_backward(dy, x, m, inv, w, axis=BN, training=training)
    wl = np.ones(x.shape[-1])
    _, lm, li = nbnorm.layer_norm(x, wl, wl)
    nbnorm.layer_norm_backward(dy, x, lm, li, wl)
    _, rs = nbnorm.rms_norm(x, wl)
    nbnorm.rms_norm_backward(dy, x, rs, wl)
    groups = 4 if c % 4 == 0 else 1
    _, gm, gi = nbnorm.group_norm(x, groups, w, b)
    nbnorm.group_norm_backward(dy, x, gm, gi, groups, w)
    _, im, ii = nbnorm.instance_norm(x, w, b, running_mean=np.zeros(c), running_var=np.ones(c))
    nbnorm.instance_norm_backward(dy, x, im, ii, w)


def _rare_builds():
    """Compile the builds the calls above do not reach: every kernel build
    whose ``stream`` or ``widen`` argument was None (no streaming stores, no
    float64 coefficients for float32 data) also with each of them True, as a
    large output or data near the ends of float32's range launch it."""
    import inspect
    from itertools import product

    from numba import types

    from ._cpu import kernels
    from ._cpu._threads import Kernel

    for kernel in vars(kernels).values():
        if not isinstance(kernel, Kernel):
            continue
        for build in (kernel.parallel, kernel.serial):
            names = list(inspect.signature(build.py_func).parameters)
            rare = [i for i, name in enumerate(names) if name in ("stream", "widen")]
            for sig in list(build.signatures):
                # float64 data never need float64 coefficients widened
                wide = "u" in names and sig[names.index("u")].dtype == types.float64
                at = [i for i in rare if sig[i] == types.none
                      and not (wide and names[i] == "widen")]
                for choice in product((types.none, types.boolean), repeat=len(at)):
                    args = list(sig)
                    for i, t in zip(at, choice):
                        args[i] = t
                    build.compile(tuple(args))


def compile_all(dtypes=("float16", "float32", "float64"), report=print):
    """Compile (or load from the cache) every CPU kernel build for ``dtypes``;
    returns the number of builds that had to be compiled."""
    from numba.core import event

    with event.install_recorder("numba:compile") as rec:
        for dtype in dtypes:
            t0 = time.perf_counter()
            before = len(rec.buffer)
            for shape in SHAPES:
                x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
                _calls(x)                                              # NCHW
                _calls(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2))
            _rare_builds()
            built = (len(rec.buffer) - before) // 2
            report(f"{dtype}: {built} builds compiled in {time.perf_counter() - t0:.1f} s")
    return len(rec.buffer) // 2
