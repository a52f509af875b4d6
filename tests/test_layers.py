"""The layers (BatchNorm, InstanceNorm, GroupNorm, LayerNorm, RMSNorm):
modes, running statistics, backward, state dicts and devices — against
nbnorm's float64 references and, where installed, PyTorch's modules."""
from __future__ import annotations

import io

import numpy as np
import pytest

import nbnorm
from nbnorm import reference as R

from helpers import normal


def steps(layer, shape, n, seed=0, loc=1.0, dtype=np.float64):
    """``n`` training calls; returns the inputs."""
    xs = [normal(shape, dtype, seed=seed + i, loc=loc + i, scale=1.0 + i) for i in range(n)]
    for x in xs:
        layer(x)
    return xs


# ------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("momentum", [0.1, None, 0.0, 1.0])
def test_batchnorm_running_statistics(momentum):
    bn = nbnorm.BatchNorm(3, momentum=momentum, dtype=np.float64)
    xs = steps(bn, (4, 3, 5), 3)
    rm, rv = np.zeros(3), np.ones(3)
    for t, x in enumerate(xs, 1):
        f = 1.0 / t if momentum is None else momentum
        R.batch_norm_forward(x, axis=(0, 2), running_mean=rm, running_var=rv, momentum=f)
    assert bn.num_batches_tracked == 3
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bn.running_var, rv, rtol=1e-12)


def test_batchnorm_modes_forward_and_backward():
    bn = nbnorm.BatchNorm(4, channel_axis=-1, dtype=np.float64)
    bn.weight[:] = [1.0, 2.0, -1.0, 0.5]
    bn.bias[:] = [0.0, 1.0, 2.0, 3.0]
    x = normal((6, 5, 4), np.float64, seed=1, loc=2.0)
    dy = normal(x.shape, np.float64, seed=2)
    y = bn(x)
    yr, mean, invstd = R.batch_norm_forward(x, bn.weight, bn.bias, axis=(0, 1))
    np.testing.assert_allclose(y, yr, rtol=1e-12, atol=1e-12)
    dx = bn.backward(dy)
    dxr, dwr, dbr = R.batch_norm_backward(dy, x, mean, invstd, bn.weight, axis=(0, 1))
    np.testing.assert_allclose(dx, dxr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.weight_grad, dwr, rtol=1e-10)
    np.testing.assert_allclose(bn.bias_grad, dbr, rtol=1e-10)
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    for mode in ("eval", "freeze"):
        getattr(bn, mode)()
        y = bn(x)
        np.testing.assert_allclose(y, R.batch_norm_inference(x, rm, rv, bn.weight, bn.bias,
                                                             axis=(0, 1)), rtol=1e-12)
        np.testing.assert_array_equal(bn.running_mean, rm)      # not updated
    dx = bn.backward(dy)                                         # frozen: training=False
    inv = 1 / np.sqrt(rv + bn.eps)
    dxr, dwr, _ = R.batch_norm_backward(dy, x, rm, inv, bn.weight, axis=(0, 1), training=False)
    np.testing.assert_allclose(dx, dxr, rtol=1e-12)
    np.testing.assert_allclose(bn.weight_grad, dwr, rtol=1e-10)
    bn.eval()
    bn(x)
    with pytest.raises(RuntimeError, match="eval-mode calls save nothing"):
        bn.backward(dy)
    assert bn.train().mode == "train" and bn.eval().mode == "eval"
    assert bn.freeze().mode == "frozen"


def test_batchnorm_without_tracking_or_affine():
    bn = nbnorm.BatchNorm(3, affine=False, track_running_stats=False, dtype=np.float64)
    x = normal((5, 3, 2), np.float64, seed=3, loc=4.0)
    for mode in ("train", "eval"):
        getattr(bn, mode)()
        np.testing.assert_allclose(bn(x), R.batch_norm_forward(x, axis=(0, 2))[0], atol=1e-12)
    assert bn.running_mean is None and bn.state_dict() == {}
    bn.train()
    bn(x)
    bn.backward(np.ones_like(x))
    assert bn.weight_grad is None and bn.bias_grad is None


def test_backward_errors():
    bn = nbnorm.BatchNorm(3)
    with pytest.raises(RuntimeError, match="BatchNorm.backward: no forward"):
        bn.backward(np.zeros((2, 3), np.float32))
    bn(normal((4, 3), np.float32, seed=4))
    with pytest.raises(ValueError, match=r"dy: expected the shape of the last input \(4, 3\)"):
        bn.backward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="expected 3 channels"):
        bn(np.zeros((4, 5), np.float32))


def test_constructor_errors():
    cases = [
        (ValueError, "num_features", lambda: nbnorm.BatchNorm(0)),
        (TypeError, "num_features", lambda: nbnorm.BatchNorm(2.5)),
        (ValueError, "momentum", lambda: nbnorm.BatchNorm(3, momentum=1.5)),
        (ValueError, "eps", lambda: nbnorm.BatchNorm(3, eps=-1)),
        (TypeError, "dtype", lambda: nbnorm.BatchNorm(3, dtype=np.int32)),
        (ValueError, "num_groups", lambda: nbnorm.GroupNorm(2, 5)),
        (ValueError, "normalized_shape", lambda: nbnorm.LayerNorm(())),
    ]
    for exc, word, call in cases:
        with pytest.raises(exc, match=word):
            call()


# ----------------------------------------------------------- state dicts
def test_state_dict_round_trip_through_savez():
    bn = nbnorm.BatchNorm(3)
    steps(bn, (4, 3, 2), 2, dtype=np.float32)
    bn.weight[:] = [1.5, 2.5, 3.5]
    sd = bn.state_dict()
    assert set(sd) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    assert sd["num_batches_tracked"].shape == () and sd["num_batches_tracked"] == 2
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    other = nbnorm.BatchNorm(3).load_state_dict(dict(np.load(buf)))
    for k, v in sd.items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    x = normal((4, 3, 2), np.float32, seed=9)
    np.testing.assert_array_equal(other.eval()(x), bn.eval()(x))


def test_load_state_dict_checks_first_and_changes_nothing():
    bn = nbnorm.BatchNorm(3)
    before = bn.state_dict()
    good = {k: v + 1 for k, v in before.items()}
    bad_shape = dict(good, running_var=np.ones(4))
    with pytest.raises(ValueError, match="'running_var': expected shape \\(3,\\)"):
        bn.load_state_dict(bad_shape)
    missing = {k: v for k, v in good.items() if k != "bias"}
    with pytest.raises(KeyError, match="missing keys \\['bias'\\]"):
        bn.load_state_dict(missing)
    with pytest.raises(KeyError, match="unexpected keys \\['extra'\\]"):
        bn.load_state_dict(dict(good, extra=np.zeros(3)))
    with pytest.raises(TypeError, match="'weight': expected numbers"):
        bn.load_state_dict(dict(good, weight=np.array(["a", "b", "c"])))
    for k, v in before.items():
        np.testing.assert_array_equal(bn.state_dict()[k], v)
    bn.load_state_dict(missing, strict=False)
    np.testing.assert_array_equal(bn.weight, good["weight"])
    np.testing.assert_array_equal(bn.bias, before["bias"])


# ------------------------------------------------------------- PyTorch
def _torch_pair(kind, dtype=np.float64):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    mk = {
        "batch": (lambda: nbnorm.BatchNorm(6, dtype=dtype), lambda: nn.BatchNorm2d(6)),
        "batch-cumulative": (lambda: nbnorm.BatchNorm(6, momentum=None, dtype=dtype),
                             lambda: nn.BatchNorm2d(6, momentum=None)),
        "instance": (lambda: nbnorm.InstanceNorm(6, affine=True, track_running_stats=True,
                                                 dtype=dtype),
                     lambda: nn.InstanceNorm2d(6, affine=True, track_running_stats=True)),
        "group": (lambda: nbnorm.GroupNorm(3, 6, dtype=dtype), lambda: nn.GroupNorm(3, 6)),
        "layer": (lambda: nbnorm.LayerNorm((4, 5), dtype=dtype), lambda: nn.LayerNorm((4, 5))),
        "rms": (lambda: nbnorm.RMSNorm(5, dtype=dtype), lambda: nn.RMSNorm(5)),
    }[kind]
    ours, theirs = mk[0](), mk[1]().double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.from_numpy(np.random.default_rng(1).standard_normal(p.shape)))
    ours.load_state_dict(theirs.state_dict())
    return torch, ours, theirs


@pytest.mark.parametrize("kind", ["batch", "batch-cumulative", "instance", "group", "layer",
                                  "rms"])
def test_layers_match_pytorch_modules_in_every_mode(kind):
    torch, ours, theirs = _torch_pair(kind)
    for step, mode in enumerate(["train", "train", "train", "eval", "freeze"]):
        x = normal((3, 6, 4, 5), np.float64, seed=step, loc=1.0 + step, scale=1.0 + step)
        dy = normal(x.shape, np.float64, seed=10 + step)
        getattr(ours, mode)()
        theirs.train(mode == "train")
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = theirs(xt)
        y = ours(x)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10,
                                   err_msg=f"{kind} {mode} y")
        if mode != "eval":
            theirs.zero_grad()
            yt.backward(torch.from_numpy(dy))
            dx = ours.backward(dy)
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{kind} {mode} dx")
            for name in ("weight", "bias"):
                p = getattr(theirs, name, None)
                if p is not None:
                    np.testing.assert_allclose(getattr(ours, name + "_grad"), p.grad.numpy(),
                                               rtol=1e-9, atol=1e-9,
                                               err_msg=f"{kind} {mode} d{name}")
        for k, v in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{kind} {mode} {k}")
    fresh = _torch_pair(kind)[2]
    fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                           ours.state_dict().items()})
    fresh.eval()
    ours.eval()
    x = normal((3, 6, 4, 5), np.float64, seed=99)
    np.testing.assert_allclose(ours(x), fresh(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------- devices
@pytest.mark.cuda
def test_layer_on_the_device():
    from helpers import Backend
    bk = Backend("cuda")
    bn = nbnorm.BatchNorm(3, dtype=np.float64)
    host = nbnorm.BatchNorm(3, dtype=np.float64)
    x = normal((4, 3, 2), np.float64, seed=5, loc=2.0)
    dy = normal(x.shape, np.float64, seed=6)
    bn.to("cuda")
    with pytest.raises(TypeError, match=r"layer.to\('cpu'\)"):
        bn(x)
    y = bn(bk.put(x))
    dx = bn.backward(bk.put(dy))
    np.testing.assert_allclose(bk.get(y), host(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bk.get(dx), host.backward(dy), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bk.get(bn.weight_grad), host.weight_grad, rtol=1e-10)
    sd = bn.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    np.testing.assert_allclose(sd["running_mean"], host.running_mean, rtol=1e-12)
    bn.to("cpu")
    with pytest.raises(TypeError, match=r"layer.to\('cuda'\)"):
        bn(bk.put(x))
    np.testing.assert_allclose(bn.eval()(x), host.eval()(x), rtol=1e-12)


@pytest.mark.parametrize("xdtype", [np.float16, np.float64])
def test_float32_parameters_with_other_input_dtypes(xdtype):
    """Mixed precision: float32 parameters and buffers, float16/float64 data;
    outputs in the data's dtype, gradients in the statistics' type."""
    layers = [nbnorm.BatchNorm(3), nbnorm.GroupNorm(1, 3), nbnorm.LayerNorm(5),
              nbnorm.RMSNorm(5), nbnorm.InstanceNorm(3, affine=True, track_running_stats=True)]
    x = normal((4, 3, 5), xdtype, seed=8, loc=1.0)
    for layer in layers:
        y = layer(x)
        assert y.dtype == xdtype and layer.backward(x).dtype == xdtype
        assert layer.weight_grad.dtype == (np.float64 if xdtype == np.float64 else np.float32)
        ref = type(layer).__name__
        with_f64 = layer.state_dict()
        twin = {"BatchNorm": lambda: nbnorm.BatchNorm(3, dtype=np.float64),
                "GroupNorm": lambda: nbnorm.GroupNorm(1, 3, dtype=np.float64),
                "LayerNorm": lambda: nbnorm.LayerNorm(5, dtype=np.float64),
                "RMSNorm": lambda: nbnorm.RMSNorm(5, dtype=np.float64),
                "InstanceNorm": lambda: nbnorm.InstanceNorm(3, affine=True,
                                                            track_running_stats=True,
                                                            dtype=np.float64)}[ref]()
        twin.load_state_dict(with_f64)
        y64 = twin.eval()(x.astype(np.float64))
        tol = 8 * np.finfo(xdtype).eps * (1 + np.abs(y64).max())
        assert np.abs(layer.eval()(x).astype(np.float64) - y64).max() <= tol, ref
