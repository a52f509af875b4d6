"""Self-check and benchmark of the normalization family (``python -m nbnorm``):
group norm (G = 32, or the largest of 32, 16, … that divides C), instance
norm, layer norm over (C, H, W) and RMS norm over the last axis of an NCHW
array, forward and backward, against :mod:`nbnorm.reference` and beside
PyTorch CPU when importable (:mod:`._peers`).  Byte model as in :mod:`._bench` (forward
``2S``, backward ``3S``)."""
from __future__ import annotations

import numpy as np

from . import _family as nb
from . import reference as ref
from ._bench import BYTES, TOLERANCE, Row, _scaled_error, median_time
from ._peers import autograd, peer


def _members(shape):
    C = shape[1]
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if C % g == 0)
    lay = (1, 2, 3)
    return {
        "group_norm": (lambda m, x, w, b: m.group_norm(x, groups, w, b),
                       lambda m, dy, x, s, w: m.group_norm_backward(dy, x, *s, groups, w), "c"),
        "instance_norm": (lambda m, x, w, b: m.instance_norm(x, w, b),
                          lambda m, dy, x, s, w: m.instance_norm_backward(dy, x, *s, w), "c"),
        "layer_norm": (lambda m, x, w, b: m.layer_norm(x, w, b, axis=lay),
                       lambda m, dy, x, s, w: m.layer_norm_backward(dy, x, *s, w, axis=lay),
                       "chw"),
        "rms_norm": (lambda m, x, w, b: m.rms_norm(x, w),
                     lambda m, dy, x, s, w: m.rms_norm_backward(dy, x, *s, w), "w"),
    }, groups


def _torch_calls(name, x, dy, w, b, groups):
    """``(forward, backward)`` callables of PyTorch CPU (:mod:`._peers`'
    ``torch-functional``), or None: the forward without autograd, the
    backward through autograd to x and the weight."""
    try:
        import torch
    except ImportError:
        return None
    xt = torch.from_numpy(np.ascontiguousarray(x))
    wt, bt = torch.from_numpy(w), torch.from_numpy(b)

    def bind(a, w_, b_):
        if name == "group_norm":
            return peer("torch-functional", name)(a, groups, w_, b_)
        if name == "layer_norm":
            return peer("torch-functional", name)(a, w_, b_, axis=(1, 2, 3))
        if name == "rms_norm":
            return peer("torch-functional", name)(a, w_)
        return peer("torch-functional", name)(a, w_, b_)
    xg, wg = xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)
    y = bind(xg, wg, bt)()
    dyt = torch.from_numpy(np.ascontiguousarray(dy))
    call = bind(xt, wt, bt)

    def forward():
        with torch.no_grad():
            return call()
    return forward, autograd(y, (xg, wg), dyt)


def run_family_cases(shape, dtype, repeat=5, copy_bw=np.nan, with_peers=True, seed=1):
    """Check and time each member's forward and backward on NCHW ``x``."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    members, groups = _members(shape)
    sd = np.float64 if dtype == np.float64 else np.float32
    rows = []
    for name, (forward, backward, pshape) in members.items():
        p = {"c": (shape[1],), "chw": tuple(shape[1:]), "w": (shape[-1],)}[pshape]
        w = (rng.standard_normal(p) * 0.5 + 1).astype(sd)
        b = rng.standard_normal(p).astype(sd)
        got = forward(nb, x, w, b)
        want = forward(ref, x, w, b)
        stats = got[1:]
        peers = _torch_calls(name, x, dy, w, b, groups) if with_peers and dtype != np.float16 \
            else None
        cases = (("forward", lambda: forward(nb, x, w, b), _scaled_error(got[0], want[0])),
                 ("backward", lambda: backward(nb, dy, x, stats, w),
                  _scaled_error(backward(nb, dy, x, stats, w)[0],
                                backward(ref, dy, x, stats, w)[0])))
        for k, (op, fast, err) in enumerate(cases):
            t = median_time(fast, repeat)
            t_th = median_time(peers[k], repeat) if peers else np.nan
            gbps = BYTES[op] * x.nbytes / t
            rows.append(Row(f"{name} {op}", tuple(x.shape), "NCHW", dtype.name, t, gbps / 1e9,
                            gbps / copy_bw, np.nan, t_th / t, err, err <= TOLERANCE[dtype]))
    return rows
