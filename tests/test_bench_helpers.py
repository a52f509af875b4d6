"""What ``python -m nbnorm`` and the asv suite share: the one table of peer
implementations (:mod:`nbnorm._peers`) computes what nbnorm computes, the one
copy bandwidth (:mod:`nbnorm._bandwidth`) copies and counts read + write, and
the suite's helper modules (``benchmarks/`` but ``bench_*``) define no asv
benchmarks."""
from __future__ import annotations

import importlib
import pkgutil
import re

import numpy as np
import pytest

from nbnorm import reference as R
from nbnorm._bandwidth import copier, copy_bandwidth
from nbnorm._peers import PEERS, autograd, peer

BN = ("moments", "batch_norm_forward", "batch_norm_inference", "batch_norm_backward")


def _data(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 3
    dy = rng.standard_normal(shape)
    sshape = tuple(s for d, s in enumerate(shape) if d not in axis)
    w, b = rng.standard_normal(sshape) + 1, rng.standard_normal(sshape)
    _, mean, invstd = R.batch_norm_forward(x, axis=axis)
    var = 1 / invstd ** 2 - 1e-5
    return x, dy, {"w": w, "b": b, "mean": mean, "var": var, "invstd": invstd}


def _args(op, x, dy, s):
    return {"moments": (x,), "batch_norm_forward": (x, s["w"], s["b"]),
            "batch_norm_inference": (x, s["mean"], s["var"], s["w"], s["b"]),
            "batch_norm_backward": (dy, x, s["mean"], s["invstd"], s["w"])}[op]


def _want(op, x, dy, s, axis):
    if op == "moments":
        return R.moments(x, axis)
    if op == "batch_norm_forward":
        return R.batch_norm_forward(x, s["w"], s["b"], axis=axis)[0]
    if op == "batch_norm_inference":
        return R.batch_norm_inference(x, s["mean"], s["var"], s["w"], s["b"], axis=axis)
    return R.batch_norm_backward(dy, x, s["mean"], s["invstd"], s["w"], axis=axis)[0]


def _np(v):
    return v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)


def _first(op, got):
    """The result to compare: (mean, var) of moments, else y / dx."""
    if op == "moments":
        return tuple(_np(g) for g in got)
    return _np(got[0] if isinstance(got, tuple) else got)


def _check(op, got, want):
    if op == "moments":
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g).reshape(w.shape), w, rtol=1e-9, atol=1e-9)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("op", BN)
@pytest.mark.parametrize("shape,axis", [((4, 3, 5, 6), (0, 2, 3)), ((4, 3, 5, 6), (1, 3)),
                                         ((7, 5), (0,))])
def test_numpy_peer_computes_what_nbnorm_computes(op, shape, axis):
    x, dy, s = _data(shape, axis)
    _check(op, _first(op, peer("numpy", op)(*_args(op, x, dy, s), axis=axis)()),
           _want(op, x, dy, s, axis))


@pytest.mark.parametrize("op", BN)
def test_plain_numpy_peer_takes_keepdims_statistics(op):
    axis = (0, 2, 3)
    x, dy, s = _data((4, 3, 5, 6), axis)
    keep = {k: v.reshape(1, -1, 1, 1) for k, v in s.items()}
    _check(op, _first(op, peer("numpy-plain", op)(*_args(op, x, dy, keep), axis=axis)()),
           _want(op, x, dy, s, axis))


@pytest.mark.parametrize("op", BN)
@pytest.mark.parametrize("axis", [(0, 2, 3), (1, 3)])
def test_torch_peers_compute_what_nbnorm_computes(op, axis):
    torch = pytest.importorskip("torch")
    x, dy, s = _data((4, 3, 5, 6), axis)
    t = {k: torch.from_numpy(v) for k, v in s.items()}
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
    impls = ["torch"] + (["torch-functional"] if axis == (0, 2, 3) else [])
    for impl in impls:
        got = _first(op, peer(impl, op)(*_args(op, tx, tdy, t), axis=axis)())
        if op == "moments" and impl == "torch-functional":
            got = got[::-1]                 # torch.var_mean's (var, mean)
        _check(op, got, _want(op, x, dy, s, axis))
    if axis != (0, 2, 3):
        with pytest.raises(ValueError, match="dim 1"):
            peer("torch-functional", "batch_norm_forward")(tx, t["w"], t["b"], axis=axis)


def test_torch_family_peers_and_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((4, 8, 3, 5)) + 1, rng.standard_normal((4, 8, 3, 5))
    w, b = rng.standard_normal(8) + 1, rng.standard_normal(8)
    tx, tdy, tw, tb = (torch.from_numpy(a) for a in (x, dy, w, b))
    y, mean, inv = R.group_norm(x, 4, w, b)
    np.testing.assert_allclose(peer("torch-functional", "group_norm")(tx, 4, tw, tb)().numpy(),
                               y, rtol=1e-9, atol=1e-9)
    dx = peer("torch-functional", "group_norm_backward")(
        tdy, tx, torch.from_numpy(mean), torch.from_numpy(inv), 4, tw)()[0]
    np.testing.assert_allclose(dx.numpy(), R.group_norm_backward(dy, x, mean, inv, 4, w)[0],
                               rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(peer("torch-functional", "instance_norm")(tx, tw, tb)().numpy(),
                               R.instance_norm(x, w, b)[0], rtol=1e-9, atol=1e-9)
    lw, lb = rng.standard_normal(5) + 1, rng.standard_normal(5)
    tlw, tlb = torch.from_numpy(lw), torch.from_numpy(lb)
    y, mean, inv = R.layer_norm(x, lw, lb)
    np.testing.assert_allclose(peer("torch-functional", "layer_norm")(tx, tlw, tlb)().numpy(),
                               y, rtol=1e-9, atol=1e-9)
    dx = peer("torch-functional", "layer_norm_backward")(
        tdy, tx, torch.from_numpy(mean[..., None]), torch.from_numpy(inv[..., None]), tlw, tlb)()[0]
    np.testing.assert_allclose(dx.numpy(), R.layer_norm_backward(dy, x, mean, inv, lw)[0],
                               rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(
        peer("torch-functional", "rms_norm")(tx, tlw, eps=1e-6)().numpy(),
        R.rms_norm(x, lw, eps=1e-6)[0], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="last ones"):
        peer("torch-functional", "layer_norm")(tx, tlw, tlb, axis=(1, 2))
    # autograd's backward through the layer-norm forward is the reference's dx
    xg = tx.clone().requires_grad_(True)
    back = autograd(peer("torch-functional", "layer_norm")(xg, tlw, tlb)(), (xg,), tdy)
    np.testing.assert_allclose(back()[0].numpy(), R.layer_norm_backward(dy, x, mean, inv, lw)[0],
                               rtol=1e-7, atol=1e-7)


def test_the_table_names_every_peer_once():
    impls = {impl for impl, _ in PEERS}
    assert impls == {"numpy", "cupy", "numpy-plain", "cupy-plain", "torch", "torch-functional"}
    for impl in impls - {"torch-functional"}:
        assert {op for i, op in PEERS if i == impl} == set(BN)
    with pytest.raises(KeyError, match="no peer 'numpy' of 'layer_norm'"):
        peer("numpy", "layer_norm")


# ------------------------------------------------------------ copy bandwidth
def test_copy_bandwidth_copies_and_counts_read_and_write():
    copy, moved = copier(1 << 20)
    assert moved == 2 << 20
    assert copy_bandwidth(1 << 16, repeat=2) > 0


# ------------------------------------------------------------ the asv suite
_BENCHMARK = re.compile(r"^(time|timeraw|track|mem|peakmem)_")


def _benchmark_names(obj):
    names = [n for n in vars(obj) if _BENCHMARK.match(n)]
    for name, value in vars(obj).items():
        if isinstance(value, type) and not name.startswith("_"):
            names += [f"{name}.{n}" for n in dir(value) if _BENCHMARK.match(n)]
    return names


def test_helper_modules_of_the_suite_define_no_benchmarks():
    """asv imports every module of ``benchmarks/`` and collects the
    benchmark-named attributes of each: only the ``bench_*`` modules may
    have them."""
    import benchmarks
    helpers = [m.name for m in pkgutil.iter_modules(benchmarks.__path__)
               if not m.name.startswith("bench_") and not m.ispkg]
    assert {"cases", "skips", "device", "timing", "memory"} <= set(helpers)
    for name in helpers:
        module = importlib.import_module(f"benchmarks.{name}")
        assert _benchmark_names(module) == [], name
