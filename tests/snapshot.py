"""Bitwise snapshot of the CPU backend's outputs, the guard for moves that
must not change results (refactors, file moves, one engine instead of two).

Every public operation × layout × dtype on fixed data (NumPy's PCG64 streams
are the same everywhere) is run and each output array hashed (SHA-256 of
its C-order bytes, with its dtype and shape).  Reductions are vectorized
for the host CPU, so the bits depend on its vector width: a snapshot is
recorded per CPU (LLVM's host name and feature string) and the test skips,
saying so, on another one.

    python -m tests.snapshot --write     # record this machine's snapshot
    python -m tests.snapshot             # compare, list the cases that differ

A deliberate change of results re-records the snapshot in the same commit
and says why in the message.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np

import nbnorm

PATH = Path(__file__).resolve().parent / "data" / "snapshot_cpu.json"
DTYPES = ("float16", "float32", "float64")
# (N, C, H, W) per size: a serial one and one above the parallel threshold (2**17)
SHAPES = {"small": (4, 8, 6, 10), "large": (6, 24, 33, 34)}


def machine():
    import llvmlite.binding as ll
    features = ll.get_host_cpu_features().flatten()
    return {"cpu": ll.get_host_cpu_name(),
            "features": hashlib.sha256(features.encode()).hexdigest()[:16]}


def _layouts(a):
    """The same logical NCHW array stored in four ways."""
    nhwc = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    rev = np.ascontiguousarray(a[::-1, :, ::-1])[::-1, :, ::-1]
    wide = np.zeros(a.shape[:3] + (a.shape[3] + 3,), a.dtype)[..., 1:-2]
    wide[...] = a
    return {"nchw": a, "nhwc": nhwc, "reversed": rev, "padded": wide}


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3.0 + 10.0
    return x.astype(dtype)


def _cases(dtype, size):
    """``{name: outputs}`` of every operation on one dtype and size."""
    shape = SHAPES[size]
    N, C, H, W = shape
    x0, dy0 = _data(shape, dtype, 1), _data(shape, dtype, 2)
    w = (np.arange(C) % 5 + 1).astype(dtype) / 4
    b = (np.arange(C) % 3 - 1).astype(dtype)
    G = 4
    hw_w = (np.arange(W) % 7 + 1).astype(dtype) / 8
    out = {}
    for lname, x in _layouts(x0).items():
        dy = _layouts(dy0)[lname]
        ax = (0, 2, 3)
        k = f"{dtype}/{size}/{lname}"
        out[f"{k}/moments"] = nbnorm.moments(x, ax)
        out[f"{k}/moments_ddof1_rows"] = nbnorm.moments(x, (2, 3), ddof=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xn = x.copy()
            xn[0, :, 0, ::5] = np.nan
            out[f"{k}/moments_skipna"] = nbnorm.moments(xn, ax, skipna=True)
        st = nbnorm.Moments.of(x, ax)
        out[f"{k}/state"] = (st.count, st.mean, st.m2)
        rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
        y, mean, inv = nbnorm.batch_norm_forward(x, w, b, axis=ax, running_mean=rm, running_var=rv)
        out[f"{k}/bn_forward"] = (y, mean, inv, rm, rv)
        out[f"{k}/bn_inference"] = nbnorm.batch_norm_inference(x, mean, 1 / inv**2, w, b, axis=ax)
        out[f"{k}/bn_backward"] = nbnorm.batch_norm_backward(dy, x, mean, inv, w, axis=ax)
        out[f"{k}/bn_backward_frozen"] = nbnorm.batch_norm_backward(dy, x, mean, inv, w, axis=ax,
                                                                    training=False)
        y, mean, inv = nbnorm.layer_norm(x, hw_w, None, axis=-1)
        out[f"{k}/layer_norm"] = (y, mean, inv)
        out[f"{k}/layer_norm_backward"] = nbnorm.layer_norm_backward(dy, x, mean, inv, hw_w,
                                                                     axis=-1)
        y, mean, inv = nbnorm.layer_norm(x, None, None, axis=(1, 2, 3))
        out[f"{k}/layer_norm_chw"] = (y, mean, inv)
        out[f"{k}/layer_norm_chw_backward"] = nbnorm.layer_norm_backward(dy, x, mean, inv,
                                                                         axis=(1, 2, 3))
        y, rstd = nbnorm.rms_norm(x, hw_w, axis=-1)
        out[f"{k}/rms_norm"] = (y, rstd)
        out[f"{k}/rms_norm_backward"] = nbnorm.rms_norm_backward(dy, x, rstd, hw_w, axis=-1)
        y, mean, inv = nbnorm.group_norm(x, G, w, b)
        out[f"{k}/group_norm"] = (y, mean, inv)
        out[f"{k}/group_norm_backward"] = nbnorm.group_norm_backward(dy, x, mean, inv, G, w)
        irm, irv = np.zeros(C, dtype), np.ones(C, dtype)
        y, mean, inv = nbnorm.instance_norm(x, w, b, running_mean=irm, running_var=irv)
        out[f"{k}/instance_norm"] = (y, mean, inv, irm, irv)
        out[f"{k}/instance_norm_backward"] = nbnorm.instance_norm_backward(dy, x, mean, inv, w)
    return out


def _digest(arrays):
    if not isinstance(arrays, tuple):
        arrays = (arrays,)
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


def snapshot():
    digests = {}
    for dtype in DTYPES:
        for size in SHAPES:
            digests.update({k: _digest(v) for k, v in _cases(dtype, size).items()})
    return digests


def load():
    return json.loads(PATH.read_text()) if PATH.exists() else None


def differences(recorded, now):
    return sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="record this machine's snapshot")
    a = p.parse_args(argv)
    now = snapshot()
    if a.write:
        PATH.write_text(json.dumps({"machine": machine(), "cases": now}, indent=1,
                                   sort_keys=True) + "\n")
        print(f"{PATH}: {len(now)} cases on {machine()}")
        return 0
    rec = load()
    if rec is None or rec["machine"] != machine():
        print(f"no snapshot for this machine ({machine()}); record one with --write")
        return 2
    diff = differences(rec["cases"], now)
    print("\n".join(diff) or f"all {len(now)} cases bitwise equal")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
