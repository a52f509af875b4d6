"""Every operation on operands placed against guard pages (run by
``test_placement.py`` in a subprocess: a stray access faults there).

For each case (operation × shape × dtype) the operands — ``x``, ``dy``,
``out``, parameters, statistics, running statistics — are copied into
guarded memory (:func:`guarded.place`: flush after or before a ``PROT_NONE``
page or a few bytes from it, aligned or not, forward or reversed) and the
call's results are compared with those of the same call on plain arrays;
each placed call runs with and without streaming stores, which must agree
bitwise.  Prints ``N cases`` and exits 0 when all agree.

    python memory_job.py [--dtypes f2,f4,f8] [--ops a,b] [--quick]
"""
from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

import guarded
import nbnorm
from nbnorm._cpu import _memory

# (shape, channel axis): runs around the 64-byte line, a Welford block
# (4096), streaming runs (≥ 256), fused NCHW (≥ 64 channels), a parallel size
SHAPES = [(2, 4, 3, 5), (2, 64, 2, 17), (1, 2, 1, 4097), (3, 2, 1, 300), (2, 3, 16, 16),
          (2, 64, 33, 33)]
QUICK = [(2, 4, 3, 5), (2, 64, 2, 17), (3, 2, 1, 300)]
PLACEMENTS = [(side, gap, rev) for side in ("after", "before") for gap in (0, 1, 2, 4, 12, 60)
              for rev in (False, True)]
BN = (0, 2, 3)


def _stat(shape, rng, low=0.5):
    return (low + rng.random(shape)).astype(np.float32)


def _operands(op, shape, dtype, rng):
    """The arrays of one call (placed later) and its keyword constants."""
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    a = {"x": x}
    if op in ("moments", "moments_skipna", "state"):
        if op != "moments":
            x.reshape(-1)[::7] = np.nan
        return a
    if op.startswith(("layer", "rms")):
        p = (shape[-1],)
    elif op.startswith(("group", "instance")):
        p = (c,)
    else:
        p = (c,)
    a.update(weight=_stat(p, rng), out=np.empty_like(x))
    if not op.startswith("rms"):
        a["bias"] = _stat(p, rng, -0.5)
    if op == "forward":
        a.update(running_mean=_stat(p, rng), running_var=_stat(p, rng))
    if op == "inference":
        a.update(mean=_stat(p, rng, 2.5), var=_stat(p, rng))
    if op.endswith("backward") or op == "backward_frozen":
        a["dy"] = dy
        a.pop("bias", None)
        fwd = _forward_of(op)
        stats = fwd(x, a["weight"])
        names = ("rstd",) if op.startswith("rms") else ("mean", "invstd")
        a.update(zip(names, (np.asarray(s) for s in stats)))
    return a


def _forward_of(op):
    return {
        "backward": lambda x, w: nbnorm.batch_norm_forward(x, w, axis=BN)[1:],
        "backward_frozen": lambda x, w: nbnorm.batch_norm_forward(x, w, axis=BN)[1:],
        "layer_norm_backward": lambda x, w: nbnorm.layer_norm(x, w)[1:],
        "rms_norm_backward": lambda x, w: nbnorm.rms_norm(x, w)[1:],
        "group_norm_backward": lambda x, w: nbnorm.group_norm(x, _groups(x), w)[1:],
        "instance_norm_backward": lambda x, w: nbnorm.instance_norm(x, w)[1:],
    }[op]


def _groups(x):
    return 2 if x.shape[1] % 2 == 0 else 1


def _call(op, a):
    """Run ``op`` on the arrays ``a``; returns every array it produced or wrote."""
    g = a.get
    if op == "moments":
        return nbnorm.moments(a["x"], BN)
    if op == "moments_skipna":
        return nbnorm.moments(a["x"], BN, skipna=True)
    if op == "state":
        s = nbnorm.Moments.of(a["x"], BN, skipna=True)
        return s.count, s.mean, s.var()
    if op == "forward":
        r = nbnorm.batch_norm_forward(a["x"], g("weight"), g("bias"), axis=BN, out=g("out"),
                                      running_mean=g("running_mean"),
                                      running_var=g("running_var"))
        return (*r, a["running_mean"], a["running_var"])
    if op == "inference":
        return (nbnorm.batch_norm_inference(a["x"], a["mean"], a["var"], g("weight"), g("bias"),
                                            axis=BN, out=g("out")),)
    if op in ("backward", "backward_frozen"):
        return nbnorm.batch_norm_backward(a["dy"], a["x"], a["mean"], a["invstd"], g("weight"),
                                          axis=BN, training=op == "backward", out=g("out"))
    if op == "layer_norm":
        return nbnorm.layer_norm(a["x"], g("weight"), g("bias"), out=g("out"))
    if op == "rms_norm":
        return nbnorm.rms_norm(a["x"], g("weight"), out=g("out"))
    if op == "group_norm":
        return nbnorm.group_norm(a["x"], _groups(a["x"]), g("weight"), g("bias"), out=g("out"))
    if op == "instance_norm":
        return nbnorm.instance_norm(a["x"], g("weight"), g("bias"), out=g("out"))
    if op == "layer_norm_backward":
        return nbnorm.layer_norm_backward(a["dy"], a["x"], a["mean"], a["invstd"], g("weight"),
                                          out=g("out"))
    if op == "rms_norm_backward":
        return nbnorm.rms_norm_backward(a["dy"], a["x"], a["rstd"], g("weight"), out=g("out"))
    if op == "group_norm_backward":
        return nbnorm.group_norm_backward(a["dy"], a["x"], a["mean"], a["invstd"], _groups(a["x"]),
                                          g("weight"), out=g("out"))
    if op == "instance_norm_backward":
        return nbnorm.instance_norm_backward(a["dy"], a["x"], a["mean"], a["invstd"],
                                             g("weight"), out=g("out"))
    raise ValueError(op)


OPS = ["moments", "moments_skipna", "state", "forward", "inference", "backward",
       "backward_frozen", "layer_norm", "rms_norm", "group_norm", "instance_norm",
       "layer_norm_backward", "rms_norm_backward", "group_norm_backward",
       "instance_norm_backward"]
TOL = {np.dtype(np.float16): 4e-3, np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def _results(op, arrays, stream):
    _memory.STREAM_BYTES = 0 if stream else None
    return [np.array(r, dtype=np.float64) for r in _call(op, arrays)]


def run(ops, dtypes, shapes):
    cases = failures = 0
    for op, dtype, shape in itertools.product(ops, dtypes, shapes):
        if op.startswith(("rms", "layer")) and shape[-1] > 1000:
            continue
        if shape == SHAPES[-1] and dtype != np.float32:
            continue
        rng = np.random.default_rng(cases)
        plain = _operands(op, shape, dtype, rng)
        want = _results(op, {k: v.copy() for k, v in plain.items()}, False)
        for side, gap, rev in PLACEMENTS:
            got = []
            for stream in (False, True):
                placed = {k: guarded.place(v, side, gap, rev) for k, v in plain.items()}
                got.append(_results(op, placed, stream))
                cases += 1
            for w, normal, streamed in zip(want, *got):
                tol = TOL[np.dtype(dtype)] * max(1.0, float(np.nanmax(np.abs(w), initial=0)))
                ok = (np.array_equal(normal, streamed, equal_nan=True)
                      and np.allclose(normal, w, rtol=0, atol=tol, equal_nan=True))
                if not ok:
                    failures += 1
                    print(f"MISMATCH {op} {np.dtype(dtype)} {shape} {side} gap={gap} "
                          f"reverse={rev}", flush=True)
    print(f"{cases} cases, {failures} failures", flush=True)
    return failures


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="f2,f4,f8")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    dtypes = [np.dtype(d) for d in args.dtypes.split(",")]
    failures = run(args.ops.split(","), dtypes, QUICK if args.quick else SHAPES)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
